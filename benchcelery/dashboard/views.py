"""The dashboard's pages and actions: overview, failed jobs, queued/running jobs, scheduler.

Handlers are plain: ``create_app`` wraps each in ``Web.page`` (GET) or ``Web.action`` (POST), which
do the login, CSRF and read-only checks. Redis work runs in Starlette's thread pool.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from benchcelery.dashboard import actions, data
from benchcelery.dashboard.web import Web, int_param
from benchcelery.errors import ValidationError


def failed_filter(params: Any) -> data.FailedFilter:
    return data.FailedFilter(
        site=str(params.get("site") or ""),
        queue=str(params.get("queue") or ""),
        method=str(params.get("method") or "").strip(),
        text=str(params.get("text") or "").strip(),
    )


class Views:
    def __init__(self, web: Web) -> None:
        self.web = web
        self.rt = web.rt

    # --- overview ---
    async def overview_partial(self, request: Request) -> Response:
        ov = await run_in_threadpool(data.overview, self.rt)
        return self.web.render(request, "_overview.html", ov=ov, qstates=await self.queue_states())

    async def queue_states(self) -> Any:
        """Paused queues and delayed counts, for the overview (dashboard/delayed.py)."""
        from benchcelery.dashboard.delayed import queue_states

        return await run_in_threadpool(queue_states, self.rt)

    async def overview_json(self, request: Request) -> Response:
        ov = await run_in_threadpool(data.overview, self.rt)
        return JSONResponse(ov.as_dict())

    # --- failed jobs ---
    async def failed_page(self, request: Request) -> Response:
        """One page of failed jobs; queues no config names are listed too, flagged."""
        rt = self.rt
        flt = failed_filter(request.query_params)
        number = int_param(request.query_params, "page")
        configured, stray = await run_in_threadpool(data.failed_queues, rt)
        if flt.queue and flt.queue not in configured + stray:
            rt.settings.validate_queue(flt.queue)
        fp = await run_in_threadpool(data.failed_page, rt, flt, number)
        return self.web.render(
            request,
            "failed.html",
            flt=flt,
            jobs=fp.jobs,
            total=fp.total,
            page=number,
            pages=fp.pages,
            sites=rt.bench.sites(),
            queues=configured + stray,
            stray=stray,
            here=str(request.url.path) + ("?" + request.url.query if request.url.query else ""),
        )

    async def job_page(self, request: Request) -> Response:
        from benchcelery.jobs.ops import find

        job_id = request.query_params.get("id", "")
        job = await run_in_threadpool(find, self.rt, job_id, job_id.split("::", 1)[0])
        return self.web.render(request, "job.html", job=job, here=f"/job?{urlencode({'id': job_id})}")

    async def retry(self, request: Request, form: Any, user: str) -> Response:
        message = await run_in_threadpool(actions.retry, self.rt, user, str(form.get("id") or ""))
        return self.web.back(request, form, message)

    async def delete(self, request: Request, form: Any, user: str) -> Response:
        message = await run_in_threadpool(actions.delete, self.rt, user, str(form.get("id") or ""))
        return self.web.back(request, form, message)

    async def bulk(self, request: Request, form: Any, user: str) -> Response:
        """Retry or delete every failed job the filter matches, after a confirmation page."""
        flt = failed_filter(form)
        what = str(form.get("action") or "")
        if form.get("confirm") != "yes":
            jobs = await run_in_threadpool(data.failed_jobs, self.rt, flt)
            return self.web.render(
                request, "confirm.html", action=what, flt=flt, count=len(jobs), next=form.get("next") or "/"
            )
        return self.web.back(request, form, await run_in_threadpool(actions.bulk, self.rt, user, what, flt))

    # --- queued / running jobs ---
    def job_args(self, params: Any) -> tuple[str, str, str, int]:
        sites = self.rt.bench.sites()
        site = str(params.get("site") or (sites[0] if sites else ""))
        queue = str(params.get("queue") or "default")
        state = str(params.get("state") or "queued")
        if state not in ("started", "queued"):
            raise ValidationError("state must be queued or started")
        return site, queue, state, int_param(params, "page")

    async def jobs_page(self, request: Request) -> Response:
        rt = self.rt
        site, queue, state, number = self.job_args(request.query_params)
        jp = await run_in_threadpool(data.job_page, rt, site, queue, state, number)
        return self.web.render(
            request,
            "jobs.html",
            jp=jp,
            sites=rt.bench.sites(),
            queues=list(rt.settings.queues),
            query=request.url.query,
        )

    async def jobs_partial(self, request: Request) -> Response:
        site, queue, state, number = self.job_args(request.query_params)
        jp = await run_in_threadpool(data.job_page, self.rt, site, queue, state, number)
        return self.web.render(request, "_jobs.html", jp=jp, query=request.url.query)

    async def cancel(self, request: Request, form: Any, user: str) -> Response:
        terminate = form.get("terminate") == "1"
        job_id = str(form.get("id") or "")
        return self.web.back(request, form, await run_in_threadpool(actions.cancel, self.rt, user, job_id, terminate))

    # --- scheduler ---
    async def scheduler_page(self, request: Request) -> Response:
        from benchcelery.scheduler.status import scheduler_status

        rt = self.rt
        sites = rt.bench.sites()
        site = request.query_params.get("site") or (sites[0] if sites else "")
        rt.bench.require_site(site)

        def read() -> tuple[list[Any], Any]:
            return [scheduler_status(rt, s, jobs=False) for s in sites], scheduler_status(rt, site, jobs=True)

        summary, detail = await run_in_threadpool(read)
        return self.web.render(request, "scheduler.html", summary=summary, st=detail, site=site)

    async def scheduler_action(self, request: Request, form: Any, user: str) -> Response:
        site, what = str(form.get("site") or ""), str(form.get("action") or "")
        message = await run_in_threadpool(actions.scheduler_action, self.rt, user, site, what)
        return self.web.back(request, form, message)

    async def trigger(self, request: Request, form: Any, user: str) -> Response:
        site, method = str(form.get("site") or ""), str(form.get("method") or "")
        return self.web.back(request, form, await run_in_threadpool(actions.trigger_now, self.rt, user, site, method))

    # --- delayed jobs (scheduled, retrying) and queue states ---
    async def delayed_view(self, request: Request) -> Response:
        from benchcelery.dashboard import delayed

        params = request.query_params
        state, site, queue = (str(params.get(k) or "") for k in ("state", "site", "queue"))
        number = int_param(params, "page")

        def read() -> tuple[delayed.DelayedPage, delayed.QueueStates]:
            return delayed.delayed_page(self.rt, state, site, queue, number), delayed.queue_states(self.rt)

        dp, qs = await run_in_threadpool(read)
        return self.web.render(
            request,
            "delayed.html",
            dp=dp,
            qs=qs,
            sites=self.rt.bench.sites(),
            here=str(request.url.path) + ("?" + request.url.query if request.url.query else ""),
        )

    async def delayed_run_now(self, request: Request, form: Any, user: str) -> Response:
        message = await run_in_threadpool(actions.run_now, self.rt, user, str(form.get("id") or ""))
        return self.web.back(request, form, message)

    async def delayed_give_up(self, request: Request, form: Any, user: str) -> Response:
        message = await run_in_threadpool(actions.give_up, self.rt, user, str(form.get("id") or ""))
        return self.web.back(request, form, message)
