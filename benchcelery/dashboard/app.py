"""The dashboard's ASGI app (Starlette + Jinja2, server-rendered; a few lines of JS refresh live parts).

Every page needs a session (see auth.py); every action is a POST carrying the session's CSRF token,
refused in read-only mode, logged with the user, and redirected back with a one-line flash message.
Bulk actions render a confirmation page first. Redis work runs in Starlette's thread pool.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import redis
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from benchcelery.dashboard import actions, auth, data
from benchcelery.errors import BenchError
from benchcelery.runtime import Runtime

HERE = Path(__file__).parent
logger = logging.getLogger("benchcelery.dashboard")
Handler = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True)
class DashboardOptions:
    read_only: bool = False
    refresh_seconds: int = 5


def age(seconds: float | None) -> str:
    """'42s', '3m', '2h5m', '3d'."""
    if seconds is None:
        return "-"
    s = int(max(0, seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600}h"


def since(ts: float | None) -> str:
    return "never" if not ts else f"{age(time.time() - float(ts))} ago"


def until(ts: float | None) -> str:
    if not ts:
        return "-"
    delta = float(ts) - time.time()
    return "due" if delta <= 0 else f"in {age(delta)}"


def create_app(rt: Runtime, options: DashboardOptions | None = None) -> Starlette:
    """The dashboard for ``rt``'s bench. Needs the bench's ``dashboard_secret`` (bench dashboard token)."""
    opts = options or DashboardOptions()
    secret = auth.bench_secret(rt.bench, create=False)
    if not secret:
        raise BenchError("The dashboard has no login yet: create one with `bench dashboard token --user NAME`")
    max_age = auth.token_max_age(rt.bench.common_config())
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.globals.update(age=age, since=since, until=until, refresh=opts.refresh_seconds)
    templates.env.filters["qs"] = lambda d: urlencode({k: v for k, v in d.items() if v not in (None, "")})

    def user_of(request: Request) -> str | None:
        return request.session.get("user")

    def read_only(request: Request) -> bool:
        return opts.read_only or bool(request.session.get("read_only"))

    def render(request: Request, name: str, status: int = 200, **ctx: Any) -> Response:
        flash = request.session.pop("flash", None)
        return templates.TemplateResponse(
            request,
            name,
            {
                "user": user_of(request),
                "read_only": read_only(request),
                "csrf": request.session.get("csrf", ""),
                "flash": flash,
                "path": request.url.path,
                **ctx,
            },
            status_code=status,
        )

    def page(fn: Handler) -> Handler:
        async def wrapped(request: Request) -> Response:
            if not user_of(request):
                return RedirectResponse(f"/login?{urlencode({'next': request.url.path})}", status_code=303)
            try:
                return await fn(request)
            except BenchError as exc:
                return render(request, "error.html", status=400, message=str(exc))
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                return render(request, "error.html", status=503, message=f"Redis is unreachable: {exc}")

        return wrapped

    def action(fn: Callable[[Request, Any, str], Awaitable[Response]]) -> Handler:
        async def wrapped(request: Request) -> Response:
            user = user_of(request)
            if not user:
                return PlainTextResponse("login required", status_code=401)
            form = await request.form()
            if not auth.csrf_ok(request.session.get("csrf"), form.get("csrf")):
                return PlainTextResponse("CSRF token missing or wrong: reload the page", status_code=403)
            if read_only(request):
                return PlainTextResponse("read-only: actions are disabled", status_code=403)
            try:
                return await fn(request, form, user)
            except BenchError as exc:
                request.session["flash"] = f"error: {exc}"
                return back(request, form)

        return wrapped

    def back(request: Request, form: Any, message: str | None = None) -> Response:
        if message:
            request.session["flash"] = message
        target = str(form.get("next") or "/")
        if urlsplit(target).netloc or not target.startswith("/"):  # only back to our own pages
            target = "/"
        return RedirectResponse(target, status_code=303)

    # --- login ---
    async def login_page(request: Request) -> Response:
        return render(request, "login.html", next=request.query_params.get("next", "/"), error=None)

    async def login(request: Request) -> Response:
        form = await request.form()
        nxt = str(form.get("next") or "/")
        try:
            user, ro = auth.verify_token(secret, str(form.get("token") or ""), max_age)
        except auth.InvalidToken as exc:
            logger.warning("login refused: %s", exc)
            return render(request, "login.html", status=401, next=nxt, error=f"Login refused: {exc}")
        request.session.clear()
        request.session.update({"user": user, "read_only": ro, "csrf": auth.new_csrf()})
        logger.info("user=%s logged in%s", user, " (read-only)" if ro else "")
        return back(request, {"next": nxt})

    async def logout(request: Request) -> Response:
        form = await request.form()
        if auth.csrf_ok(request.session.get("csrf"), form.get("csrf")):
            request.session.clear()
        return RedirectResponse("/login", status_code=303)

    async def health(_request: Request) -> Response:
        ok = await run_in_threadpool(lambda: bool(rt.redis.ping()))
        return JSONResponse({"ok": ok})

    # --- overview ---
    @page
    async def overview_page(request: Request) -> Response:
        ov = await run_in_threadpool(data.overview, rt)
        return render(request, "overview.html", ov=ov)

    @page
    async def overview_partial(request: Request) -> Response:
        ov = await run_in_threadpool(data.overview, rt)
        return render(request, "_overview.html", ov=ov)

    @page
    async def overview_json(request: Request) -> Response:
        ov = await run_in_threadpool(data.overview, rt)
        return JSONResponse(ov.as_dict())

    # --- failed jobs ---
    def failed_filter(params: Any) -> data.FailedFilter:
        return data.FailedFilter(
            site=str(params.get("site") or ""),
            queue=str(params.get("queue") or ""),
            method=str(params.get("method") or "").strip(),
            text=str(params.get("text") or "").strip(),
        )

    @page
    async def failed_page(request: Request) -> Response:
        flt = failed_filter(request.query_params)
        if flt.queue:
            rt.settings.validate_queue(flt.queue)
        jobs = await run_in_threadpool(data.failed_jobs, rt, flt)
        number = max(1, int(request.query_params.get("page") or 1))
        start = (number - 1) * data.PAGE_SIZE
        return render(
            request,
            "failed.html",
            flt=flt,
            jobs=jobs[start : start + data.PAGE_SIZE],
            total=len(jobs),
            page=number,
            pages=max(1, -(-len(jobs) // data.PAGE_SIZE)),
            sites=rt.bench.sites(),
            queues=list(rt.settings.queues),
            here=str(request.url.path) + ("?" + request.url.query if request.url.query else ""),
        )

    @page
    async def job_page(request: Request) -> Response:
        from benchcelery.jobs.ops import find

        job_id = request.query_params.get("id", "")
        job = await run_in_threadpool(find, rt, job_id, job_id.split("::", 1)[0])
        return render(request, "job.html", job=job, here=f"/job?{urlencode({'id': job_id})}")

    @action
    async def retry(request: Request, form: Any, user: str) -> Response:
        return back(request, form, await run_in_threadpool(actions.retry, rt, user, str(form.get("id") or "")))

    @action
    async def delete(request: Request, form: Any, user: str) -> Response:
        return back(request, form, await run_in_threadpool(actions.delete, rt, user, str(form.get("id") or "")))

    @action
    async def bulk(request: Request, form: Any, user: str) -> Response:
        flt = failed_filter(form)
        what = str(form.get("action") or "")
        if form.get("confirm") != "yes":
            jobs = await run_in_threadpool(data.failed_jobs, rt, flt)
            return render(request, "confirm.html", action=what, flt=flt, count=len(jobs), next=form.get("next") or "/")
        return back(request, form, await run_in_threadpool(actions.bulk, rt, user, what, flt))

    # --- queued / running jobs ---
    def job_args(params: Any) -> tuple[str, str, str, int]:
        sites = rt.bench.sites()
        site = str(params.get("site") or (sites[0] if sites else ""))
        queue = str(params.get("queue") or "default")
        state = "started" if params.get("state") == "started" else "queued"
        try:
            number = int(params.get("page") or 1)
        except ValueError:
            number = 1
        return site, queue, state, number

    @page
    async def jobs_page(request: Request) -> Response:
        site, queue, state, number = job_args(request.query_params)
        jp = await run_in_threadpool(data.job_page, rt, site, queue, state, number)
        return render(
            request,
            "jobs.html",
            jp=jp,
            sites=rt.bench.sites(),
            queues=list(rt.settings.queues),
            query=request.url.query,
        )

    @page
    async def jobs_partial(request: Request) -> Response:
        site, queue, state, number = job_args(request.query_params)
        jp = await run_in_threadpool(data.job_page, rt, site, queue, state, number)
        return render(request, "_jobs.html", jp=jp, query=request.url.query)

    @action
    async def cancel(request: Request, form: Any, user: str) -> Response:
        terminate = form.get("terminate") == "1"
        job_id = str(form.get("id") or "")
        return back(request, form, await run_in_threadpool(actions.cancel, rt, user, job_id, terminate))

    # --- scheduler ---
    @page
    async def scheduler_page(request: Request) -> Response:
        from benchcelery.scheduler.status import scheduler_status

        sites = rt.bench.sites()
        site = request.query_params.get("site") or (sites[0] if sites else "")
        rt.bench.require_site(site)

        def read() -> tuple[list[Any], Any]:
            return [scheduler_status(rt, s, jobs=False) for s in sites], scheduler_status(rt, site, jobs=True)

        summary, detail = await run_in_threadpool(read)
        return render(request, "scheduler.html", summary=summary, st=detail, site=site)

    @action
    async def scheduler_action(request: Request, form: Any, user: str) -> Response:
        site, what = str(form.get("site") or ""), str(form.get("action") or "")
        return back(request, form, await run_in_threadpool(actions.scheduler_action, rt, user, site, what))

    @action
    async def trigger(request: Request, form: Any, user: str) -> Response:
        site, method = str(form.get("site") or ""), str(form.get("method") or "")
        return back(request, form, await run_in_threadpool(actions.trigger_now, rt, user, site, method))

    routes = [
        Route("/login", login_page, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/health", health),
        Route("/", overview_page),
        Route("/partial/overview", overview_partial),
        Route("/api/overview", overview_json),
        Route("/failed", failed_page),
        Route("/job", job_page),
        Route("/failed/retry", retry, methods=["POST"]),
        Route("/failed/delete", delete, methods=["POST"]),
        Route("/failed/bulk", bulk, methods=["POST"]),
        Route("/jobs", jobs_page),
        Route("/partial/jobs", jobs_partial),
        Route("/jobs/cancel", cancel, methods=["POST"]),
        Route("/scheduler", scheduler_page),
        Route("/scheduler/action", scheduler_action, methods=["POST"]),
        Route("/scheduler/trigger", trigger, methods=["POST"]),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    middleware = [
        Middleware(
            SessionMiddleware,
            secret_key=secret,
            session_cookie="bench_dashboard",
            max_age=max_age,
            same_site="strict",
        )
    ]
    return Starlette(routes=routes, middleware=middleware)
