"""Workers as their heartbeats describe them (worker/heartbeat.py writes them): alive, stuck or gone.

A worker is stuck when its key still exists but its event loop (``loop_turn``) has not turned for
STUCK_AFTER seconds: its loop is blocked, or the process cannot reach Redis (its key then expires
TTL seconds after its last heartbeat and it shows as gone).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

STUCK_AFTER = 20.0  # s; two heartbeat intervals: a live loop turns every second

if TYPE_CHECKING:
    import redis

    from benchcelery.bench.keys import Keys


@dataclass
class WorkerInfo:
    name: str
    alive: bool
    last_heartbeat: float
    queues: list[str] = field(default_factory=list)
    pid: int | None = None
    host: str | None = None
    concurrency: int = 1
    started: float | None = None
    done: int = 0
    failed: int = 0
    loop_turn: float | None = None  # the last turn of its work loop (None: an older worker)

    def stuck_for(self, now: float | None = None) -> float | None:
        """Seconds since its work loop last turned, when that is over STUCK_AFTER; else None."""
        if not self.alive or self.loop_turn is None:
            return None
        idle = (now or time.time()) - self.loop_turn
        return idle if idle > STUCK_AFTER else None


def read_workers(r: redis.Redis, keys: Keys) -> list[WorkerInfo]:
    """Every worker in the heartbeat index; ``alive`` is False once its key expired (it died)."""
    index = r.zrange(keys.workers, 0, -1, withscores=True)
    if not index:
        return []
    pipe = r.pipeline(transaction=False)
    for name, _ in index:
        pipe.hgetall(keys.worker(name.decode()))
    workers = []
    for (name, seen), facts in zip(index, pipe.execute(), strict=True):
        f = {k.decode(): v.decode() for k, v in facts.items()}
        if not f:
            workers.append(WorkerInfo(name=name.decode(), alive=False, last_heartbeat=seen))
            continue
        workers.append(
            WorkerInfo(
                name=name.decode(),
                alive=True,
                last_heartbeat=float(f.get("last_heartbeat", seen)),
                queues=json.loads(f.get("queues", "[]")),
                pid=int(f["pid"]) if f.get("pid") else None,
                host=f.get("host"),
                concurrency=int(f.get("concurrency", 1)),
                started=float(f["started"]) if f.get("started") else None,
                done=int(f.get("done", 0)),
                failed=int(f.get("failed", 0)),
                loop_turn=float(f["loop_turn"]) if f.get("loop_turn") else None,
            )
        )
    return workers


def ago(timestamp: float | None, now: float | None = None) -> str:
    """'2 minutes ago', 'never'."""
    if not timestamp:
        return "never"
    seconds = max(0, int((now or time.time()) - timestamp))
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            n = seconds // size
            return f"{n} {unit}{'s' if n != 1 else ''} ago"
    return f"{seconds} second{'s' if seconds != 1 else ''} ago"
