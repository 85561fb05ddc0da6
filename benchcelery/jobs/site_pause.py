"""Pausing one site's jobs on a queue (``bench --site S queue pause QUEUE``): its jobs keep waiting,
other sites' jobs run. The fetch script skips a site whose ``p:<site>`` field is set in
``fair:<queue>``; resuming deletes it and wakes idle workers, so the site's jobs start within a
second. The bench-wide pause of a whole queue is separate (jobs/pause.py).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import redis

    from benchcelery.bench.keys import Keys

WAKE_TOKENS = 64  # enough to wake every idle worker of the queue


def pause_site(r: redis.Redis, keys: Keys, site: str, queue: str) -> bool:
    """Pause ``site``'s jobs on ``queue``; False when they already were."""
    return bool(r.hsetnx(keys.fair(queue), f"p:{site}", repr(time.time())))


def resume_site(r: redis.Redis, keys: Keys, site: str, queue: str) -> bool:
    """Resume ``site``'s jobs on ``queue`` and wake idle workers; False when they were not paused."""
    pipe = r.pipeline(transaction=True)
    pipe.hdel(keys.fair(queue), f"p:{site}").lpush(keys.wake(queue), *[""] * WAKE_TOKENS)
    removed, _ = pipe.execute()
    return bool(removed)


def paused_sites(r: redis.Redis, keys: Keys, queues: Iterable[str]) -> dict[str, dict[str, float]]:
    """queue -> paused site -> when it was paused (epoch s); queues with none are left out."""
    queues = list(queues)
    pipe = r.pipeline(transaction=False)
    for q in queues:
        pipe.hgetall(keys.fair(q))
    out: dict[str, dict[str, float]] = {}
    for q, fields in zip(queues, pipe.execute(), strict=True):
        paused = {k.decode()[2:]: float(v) for k, v in fields.items() if k.startswith(b"p:")}
        if paused:
            out[q] = paused
    return out
