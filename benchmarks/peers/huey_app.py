"""huey: the no-op job on ``RedisHuey`` (defaults: blocking BRPOP, results kept only when not None).

Worker: ``huey_consumer benchmarks.peers.huey_app.huey -w1 -k thread``. No burst mode, no bulk enqueue.
"""

from __future__ import annotations

from huey import RedisHuey

from benchmarks.peers import _job

huey = RedisHuey("bench", url=_job.URL)


@huey.task()
def incr() -> None:
    _job.incr()


def single() -> _job.Call:
    def call(k: int) -> None:
        for _ in range(k):
            incr()

    return call


fill = single
