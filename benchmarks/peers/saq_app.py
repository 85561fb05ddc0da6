"""saq: the no-op job on saq's Redis queue (defaults: concurrency 10, job records kept after completion).

Workers: ``saq benchmarks.peers.saq_app.settings --workers 1`` (or 2); burst: ``...burst_settings``.
No bulk enqueue (``Queue.map`` waits for the results).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from saq import Queue

from benchmarks.peers import _job

queue = Queue.from_url(_job.URL, name="saq")


async def incr(ctx: Any) -> None:
    await _job.aincr()


settings: dict[str, Any] = {"queue": queue, "functions": [incr], "concurrency": 10}
burst_settings: dict[str, Any] = {**settings, "burst": True, "dequeue_timeout": 0.5}


def single() -> _job.Call:
    async def make() -> Callable[[int], Coroutine[Any, Any, None]]:
        await queue.connect()

        async def enqueue(k: int) -> None:
            for _ in range(k):
                await queue.enqueue("incr")

        return enqueue

    return _job.looped(make)


fill = single
