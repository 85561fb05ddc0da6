"""dramatiq: the no-op actor on ``RedisBroker`` with dramatiq's default middleware.

Workers: ``dramatiq benchmarks.peers.dramatiq_app -p1 -t1`` (and ``-p2 -t1``). No burst mode.
Bulk enqueue: ``dramatiq.group(...).run()``.
"""

from __future__ import annotations

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from benchmarks.peers import _job

broker = RedisBroker(url=_job.URL)
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name="default")
def incr() -> None:
    _job.incr()


def single() -> _job.Call:
    def call(k: int) -> None:
        for _ in range(k):
            incr.send()

    return call


def bulk() -> _job.Call:
    def call(k: int) -> None:
        for start in range(0, k, 1000):
            dramatiq.group(incr.message() for _ in range(min(1000, k - start))).run()

    return call


fill = bulk
