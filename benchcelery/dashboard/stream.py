"""The overview's live charts over one server-sent-events connection per browser.

One poller task per dashboard process reads Redis at most once a second (one pipelined read of
the last hour's minute counters, diagnostics/history.live), renders the charts once, and hands
the result to every open stream: a hundred browsers cost what one does. Every ``OVERVIEW_EVERY``
periods the same task also renders the overview's tables once (``overview``: the reads behind
``show-pending-jobs``) for every overview stream. It runs only while a stream is open. A site
page's stream gets that site's charts, from the same read.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.concurrency import run_in_threadpool

from benchcelery.dashboard import charts
from benchcelery.diagnostics import history
from benchcelery.runtime import Runtime

PERIOD = 1.0  # s between two reads, whatever the number of streams
KEEPALIVE = 15.0  # s; a comment line keeps proxies from closing an idle stream
OVERVIEW_EVERY = 5  # periods between two renders of the overview's tables


class Poller:
    """Reads once per period while anyone listens; each listener gets the newest frame only."""

    def __init__(self, rt: Runtime, overview: Callable[[], str] | None = None) -> None:
        self.rt = rt
        self.overview = overview  # renders the overview's tables (blocking; run in the thread pool)
        self.cycles = 0
        self.listeners: dict[asyncio.Queue[dict[str, Any]], str] = {}  # queue -> site ("" = all)
        self.reads = 0  # Redis reads made (each one round trip)
        self.task: asyncio.Task[None] | None = None
        self.last: dict[str, dict[str, Any]] = {}  # site -> the newest frame

    def subscribe(self, site: str) -> asyncio.Queue[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=1)
        self.listeners[queue] = site
        if site in self.last:
            queue.put_nowait(self.last[site])
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._run())
        return queue

    def unsubscribe(self, queue: asyncio.Queue[dict[str, Any]]) -> None:
        self.listeners.pop(queue, None)

    def _read(self) -> tuple[list[dict[Any, Any]], int]:
        self.reads += 1
        return history.live(self.rt.redis, self.rt.keys)

    async def _run(self) -> None:
        while self.listeners:
            began = time.monotonic()
            try:
                raw, last = await run_in_threadpool(self._read)
                sites = set(self.listeners.values())
                self.last = {site: frame(raw, last, site) for site in sites}
                if "" in sites and self.overview is not None and self.cycles % OVERVIEW_EVERY == 0:
                    # Sent only when rendered again (every OVERVIEW_EVERY periods).
                    self.last[""]["tables"] = await run_in_threadpool(self.overview)
                self.cycles += 1
            except Exception as exc:  # Redis away: tell the pages, keep trying
                self.last = {site: {"error": f"Redis is unreachable: {exc}"} for site in set(self.listeners.values())}
            for queue, site in list(self.listeners.items()):
                latest = self.last.get(site)  # None: it subscribed during the read (next period)
                if latest is None:
                    continue
                if queue.full():
                    queue.get_nowait()  # a slow browser gets the newest frame, not a backlog
                queue.put_nowait(latest)
            await asyncio.sleep(max(0.0, PERIOD - (time.monotonic() - began)))
        self.task = None

    def stats(self) -> dict[str, Any]:
        return {"reads": self.reads, "streams": len(self.listeners), "period": PERIOD}


def frame(raw: list[dict[Any, Any]], last: int, site: str = "") -> dict[str, Any]:
    """The charts of the last hour (of ``site``, or all sites) from one live read."""
    rows = [m.as_dict() for m in history.minutes_of(raw, last - 59, last, site or None)]
    return {
        "throughput": str(charts.throughput(rows)),
        "wait": str(charts.wait_lines(rows)),
        "done": sum(r["done"] for r in rows),
        "failed": sum(r["failed"] for r in rows),
        "at": time.time(),
    }


async def events(poller: Poller, site: str, disconnected: Any) -> AsyncIterator[str]:
    """The SSE body: one ``charts`` event per frame, a comment line when idle."""
    queue = poller.subscribe(site)
    try:
        yield "retry: 3000\n\n"
        while True:
            try:
                data = await asyncio.wait_for(queue.get(), KEEPALIVE)
            except TimeoutError:
                if await disconnected():
                    return
                yield ": keepalive\n\n"
                continue
            yield f"event: charts\ndata: {json.dumps(data)}\n\n"
            if await disconnected():
                return
    finally:
        poller.unsubscribe(queue)
