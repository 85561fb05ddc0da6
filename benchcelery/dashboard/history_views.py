"""The dashboard's history pages: Metrics (per method), a site's page, and the live stream.

Method statistics come from diagnostics/history (hour resolution); the charts are SVG rendered
here (charts.py); the overview's and a site page's live parts come over one server-sent-events
stream each (stream.py), fed by one shared poller.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from benchcelery.dashboard import charts, data, stream
from benchcelery.dashboard.delayed import queue_states
from benchcelery.dashboard.web import Web
from benchcelery.diagnostics import history
from benchcelery.errors import ValidationError

SORTS = ("count", "failure_rate", "p50", "p95", "max", "method", "queue")
WINDOW_NAMES = {"hour": "last hour", "day": "last 24 hours", "month": "last 30 days"}


def _choice(params: Any, name: str, allowed: tuple[str, ...] | dict[str, str], default: str) -> str:
    value = str(params.get(name) or default)
    if value not in allowed:
        raise ValidationError(f"{name} must be one of {', '.join(allowed)}")
    return value


def sort_stats(rows: list[history.MethodStats], key: str, descending: bool) -> list[history.MethodStats]:
    def value(row: history.MethodStats) -> Any:
        got = getattr(row, key)
        return got if got is not None else -1.0

    return sorted(rows, key=value, reverse=descending)


class HistoryViews:
    def __init__(self, web: Web) -> None:
        self.web = web
        self.rt = web.rt
        self.poller = stream.Poller(web.rt, self._overview_tables)

    def _overview_tables(self) -> str:
        ov = data.overview(self.rt)
        return str(self.web.templates.get_template("_overview.html").render(ov=ov, qstates=queue_states(self.rt)))

    def _filters(self, params: Any) -> tuple[str, str]:
        site, queue = str(params.get("site") or ""), str(params.get("queue") or "")
        if site:
            self.rt.bench.require_site(site)
        if queue:
            self.rt.settings.validate_queue(queue)
        return site, queue

    async def live_charts(self, site: str = "") -> dict[str, Any]:
        """The charts a page shows before its stream's first frame (one read)."""
        raw, last = await run_in_threadpool(history.live, self.rt.redis, self.rt.keys)
        return stream.frame(raw, last, site)

    async def overview_page(self, request: Request) -> Response:
        """The overview with its live charts; its stream replaces charts and tables as they change."""
        ov = await run_in_threadpool(data.overview, self.rt)
        qstates = await run_in_threadpool(queue_states, self.rt)
        return self.web.render(request, "overview.html", ov=ov, qstates=qstates, live=await self.live_charts())

    async def metrics_page(self, request: Request) -> Response:
        """Per (queue, method): count, failure rate, p50/p95/max run time, a run-time histogram."""
        params = request.query_params
        window = _choice(params, "window", WINDOW_NAMES, "hour")
        sort = _choice(params, "sort", SORTS, "count")
        descending = params.get("dir", "desc") != "asc"
        site, queue = self._filters(params)
        rows = await run_in_threadpool(
            history.method_stats, self.rt.redis, self.rt.keys, window, site or None, queue or None
        )
        rows = sort_stats(rows, sort, descending)
        chosen = str(params.get("method") or "")
        selected = next((r for r in rows if f"{r.queue}:{r.method}" == chosen), rows[0] if rows else None)
        return self.web.render(
            request,
            "metrics.html",
            rows=rows,
            selected=selected,
            chart=charts.histogram(selected.run, f"Run time of {selected.method}") if selected else None,
            wait_chart=charts.histogram(selected.wait, f"Wait time of {selected.method}") if selected else None,
            window=window,
            windows=WINDOW_NAMES,
            sort=sort,
            descending=descending,
            site=site,
            queue=queue,
            sites=self.rt.bench.sites(),
            queues=list(self.rt.settings.queues),
            fmt=charts.seconds_text,
            params={
                "window": window,
                "site": site,
                "queue": queue,
                "sort": sort,
                "dir": "desc" if descending else "asc",
            },
        )

    async def site_page(self, request: Request) -> Response:
        """One site's live charts (last hour), its last 24 hours per hour, and its methods."""
        site = str(request.query_params.get("site") or "")
        self.rt.bench.require_site(site)
        live = await self.live_charts(site)
        hours = await run_in_threadpool(history.hourly, self.rt.redis, self.rt.keys, 24, site)
        rows = await run_in_threadpool(history.method_stats, self.rt.redis, self.rt.keys, "day", site)
        return self.web.render(
            request,
            "site.html",
            site=site,
            live=live,
            day=charts.hourly_bars(hours, f"Jobs done / failed per hour, {site}"),
            rows=rows,
            fmt=charts.seconds_text,
        )

    async def stream(self, request: Request) -> Response:
        """Server-sent events: the page's charts every second (one shared Redis read for all)."""
        site = str(request.query_params.get("site") or "")
        if site:
            self.rt.bench.require_site(site)
        headers = {"X-Accel-Buffering": "no"}  # nginx: pass events through as they come
        body = stream.events(self.poller, site, request.is_disconnected)
        return StreamingResponse(body, media_type="text/event-stream", headers=headers)

    async def stream_stats(self, request: Request) -> Response:
        return JSONResponse({**self.poller.stats(), "at": time.time()})
