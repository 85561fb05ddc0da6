"""Pausing a queue for the whole bench (``bench queue pause|resume|status``).

A paused queue's name is in the bench's ``paused`` set; the fetch script reads it on every take
and skips the queue (broker/lua/fetch.lua), so every worker honours a pause at its next fetch,
without a restart. Jobs are still accepted and counted while it is paused; resuming pushes wake
tokens so idle workers take them at once.
"""

from __future__ import annotations

from typing import Any

from benchcelery.jobs.bulk import WAKE_TOKENS
from benchcelery.runtime import Runtime


def pause(rt: Runtime, queue: str) -> bool:
    """Pause ``queue``; False when it was paused already. Raises ValidationError for an unknown queue."""
    rt.settings.validate_queue(queue)
    return bool(rt.redis.sadd(rt.keys.paused, queue))


def resume(rt: Runtime, queue: str) -> bool:
    """Resume ``queue`` and wake idle workers for its waiting jobs; False when it was not paused."""
    rt.settings.validate_queue(queue)
    pipe = rt.redis.pipeline(transaction=True)
    pipe.srem(rt.keys.paused, queue)
    pipe.lpush(rt.keys.wake(queue), *[""] * WAKE_TOKENS)
    removed, _ = pipe.execute()
    return bool(removed)


def paused(rt: Runtime) -> set[str]:
    """The paused queues."""
    return {q.decode() for q in rt.redis.smembers(rt.keys.paused)}


def status(rt: Runtime) -> list[dict[str, Any]]:
    """Each queue of the bench: paused or not, with its waiting and scheduled jobs."""
    from benchcelery.jobs.scheduled import counts

    queues = list(rt.settings.queues)
    pipe = rt.redis.pipeline(transaction=False)
    pipe.smembers(rt.keys.paused)
    for queue in queues:
        pipe.hvals(rt.keys.pending_counts(queue))
    stopped, *pending = pipe.execute()
    names = {q.decode() for q in stopped}
    scheduled = counts(rt, queues)
    return [
        {
            "queue": queue,
            "paused": queue in names,
            "pending": sum(max(0, int(v)) for v in values),
            "scheduled": sum(scheduled[queue].values()),
        }
        for queue, values in zip(queues, pending, strict=True)
    ]
