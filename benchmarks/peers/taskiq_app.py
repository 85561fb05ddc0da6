"""taskiq with taskiq-redis: the no-op job on the list broker (one BRPOP per job, no ack) and on
the stream broker (XREADGROUP + XACK). The stream's consumer group reads from the start of the
stream (``consumer_id="0"``) so a worker started after the fill sees the jobs.

Workers: ``taskiq worker benchmarks.peers.taskiq_app:list_broker --workers 1`` (and ``stream_broker``).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from taskiq import AsyncBroker
from taskiq_redis import ListQueueBroker, RedisStreamBroker

from benchmarks.peers import _job

list_broker = ListQueueBroker(_job.URL, queue_name="taskiq-list")
stream_broker = RedisStreamBroker(_job.URL, queue_name="taskiq-stream", consumer_id="0")


async def _incr() -> None:
    await _job.aincr()


list_incr = list_broker.task(task_name="incr")(_incr)
stream_incr = stream_broker.task(task_name="incr")(_incr)


def _single(broker: AsyncBroker, task: Any) -> _job.Call:
    async def make() -> Callable[[int], Coroutine[Any, Any, None]]:
        await broker.startup()

        async def enqueue(k: int) -> None:
            for _ in range(k):
                await task.kiq()

        return enqueue

    return _job.looped(make)


def single_list() -> _job.Call:
    return _single(list_broker, list_incr)


def single_stream() -> _job.Call:
    return _single(stream_broker, stream_incr)


fill_list, fill_stream = single_list, single_stream
