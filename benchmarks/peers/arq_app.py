"""arq: the no-op job with arq's defaults (results kept an hour, queue polled every 0.5 s, 10 jobs
at a time). The job INCRs on arq's own connection (``ctx["redis"]``), as rq's job does on rq's.

Worker: ``arq benchmarks.peers.arq_app.WorkerSettings [--burst]``. No bulk enqueue.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from arq.connections import RedisSettings, create_pool

from benchmarks.apps import COUNTER
from benchmarks.peers import _job


async def incr(ctx: dict[str, Any]) -> None:
    await ctx["redis"].incr(COUNTER)


class WorkerSettings:
    functions = [incr]
    redis_settings = RedisSettings.from_dsn(_job.URL)


def single() -> _job.Call:
    async def make() -> Callable[[int], Coroutine[Any, Any, None]]:
        pool = await create_pool(WorkerSettings.redis_settings)

        async def enqueue(k: int) -> None:
            for _ in range(k):
                await pool.enqueue_job("incr")

        return enqueue

    return _job.looped(make)


fill = single
