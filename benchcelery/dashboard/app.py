"""The dashboard's ASGI app (Starlette + Jinja2, server-rendered; a few lines of JS refresh live parts).

Every page needs a session (see auth.py); every action is a POST carrying the session's CSRF token,
refused in read-only mode, logged with the user, and redirected back with a one-line flash message.
Bulk actions render a confirmation page first. Redis work runs in Starlette's thread pool.

Modules: ``web`` (shared helpers and the page/action guards), ``login`` (login, logout, health),
``views`` (pages and actions), ``history_views`` (charts, Metrics, site pages, the live stream),
``data`` (what pages show), ``actions`` (what buttons do).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from benchcelery.dashboard import auth
from benchcelery.dashboard.history_views import HistoryViews
from benchcelery.dashboard.login import LoginViews
from benchcelery.dashboard.sessions import SessionMiddleware
from benchcelery.dashboard.views import Views
from benchcelery.dashboard.web import Web
from benchcelery.errors import BenchError
from benchcelery.runtime import Runtime
from benchcelery.util.text import age

HERE = Path(__file__).parent


@dataclass(frozen=True)
class DashboardOptions:
    read_only: bool = False
    refresh_seconds: int = 5


def since(ts: float | None) -> str:
    return "never" if not ts else f"{age(time.time() - float(ts))} ago"


def until(ts: float | None) -> str:
    if not ts:
        return "-"
    delta = float(ts) - time.time()
    return "due" if delta <= 0 else f"in {age(delta)}"


def create_app(rt: Runtime, options: DashboardOptions | None = None) -> Starlette:
    """The dashboard for ``rt``'s bench. Needs the bench's ``dashboard_secret`` (bench dashboard token),
    which every request reads again (sessions.py)."""
    opts = options or DashboardOptions()
    if not auth.bench_secret(rt.bench, create=False):
        raise BenchError("The dashboard has no login yet: create one with `bench dashboard token --user NAME`")
    conf = rt.bench.common_config()
    max_age = auth.token_max_age(conf)
    proxies = conf.get("dashboard_trusted_proxies") or []
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.globals.update(age=age, since=since, until=until, refresh=opts.refresh_seconds)
    templates.env.filters["qs"] = lambda d: urlencode({k: v for k, v in d.items() if v not in (None, "")})
    web = Web(rt, templates, max_age, opts.read_only)
    middleware = [Middleware(SessionMiddleware, rt=rt, max_age=max_age, trusted_proxies=list(proxies))]
    return Starlette(routes=routes(web), middleware=middleware)


def routes(web: Web) -> list[BaseRoute]:
    """Every URL: GET pages need a session (``page``); POST actions also a CSRF token and write access
    (``action``); login, logout and health are reachable without a session."""
    entry, v, h = LoginViews(web), Views(web), HistoryViews(web)
    page, action = web.page, web.action
    return [
        Route("/login", entry.login_page, methods=["GET"]),
        Route("/login", entry.login, methods=["POST"]),
        Route("/logout", entry.logout, methods=["POST"]),
        Route("/health", entry.health),
        Route("/", page(h.overview_page)),
        Route("/stream", page(h.stream)),
        Route("/api/stream", page(h.stream_stats)),
        Route("/metrics", page(h.metrics_page)),
        Route("/site", page(h.site_page)),
        Route("/partial/overview", page(v.overview_partial)),
        Route("/api/overview", page(v.overview_json)),
        Route("/failed", page(v.failed_page)),
        Route("/job", page(v.job_page)),
        Route("/failed/retry", action(v.retry), methods=["POST"]),
        Route("/failed/delete", action(v.delete), methods=["POST"]),
        Route("/failed/bulk", action(v.bulk), methods=["POST"]),
        Route("/jobs", page(v.jobs_page)),
        Route("/partial/jobs", page(v.jobs_partial)),
        Route("/jobs/cancel", action(v.cancel), methods=["POST"]),
        Route("/scheduler", page(v.scheduler_page)),
        Route("/scheduler/action", action(v.scheduler_action), methods=["POST"]),
        Route("/scheduler/trigger", action(v.trigger), methods=["POST"]),
        Route("/delayed", page(v.delayed_view)),
        Route("/delayed/run-now", action(v.delayed_run_now), methods=["POST"]),
        Route("/delayed/give-up", action(v.delayed_give_up), methods=["POST"]),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
