"""The run log of scheduled jobs: per site, the newest runs (capped) and each job's last outcome.

Written by the worker (``job_finished`` listens to ``jobs/listeners.py``, which the engine calls
for every job carrying an ``event``), read by ``scheduler status --verbose``. Unlike Frappe, a
failed scheduled run is also a normal failed job in the failed registry, so it is never invisible.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from benchcelery.jobs.listeners import on_job_finished
from benchcelery.runtime import get_runtime
from benchcelery.scheduler import JOB_ID_PREFIX  # not .events: workers need no croniter

if TYPE_CHECKING:
    import redis

    from benchcelery.bench.keys import Keys

RUN_LOG_LIMIT = 1000  # records kept per site
OK, FAILED = "ok", "failed"


@dataclass
class Run:
    site: str
    event: str
    method: str
    job_id: str
    queue: str
    enqueued_at: float | None
    started_at: float | None
    ended_at: float
    outcome: str  # ok / failed
    error: str | None = None

    @property
    def job_name(self) -> str:
        return f"{self.event}::{self.method}"


@on_job_finished
def job_finished(meta: dict[str, Any], error: str | None) -> None:
    """Record how a scheduled job's run ended (called in the worker; ``error`` None = success)."""
    job_id = str(meta.get("job_id") or "")
    if f"::{JOB_ID_PREFIX}" not in job_id:
        return  # an ordinary job that merely carries an event header: not a scheduled run
    rt = get_runtime()
    site = meta.get("site") or "?"
    run = Run(
        site=site,
        event=str(meta.get("event")),
        method=str(meta.get("method") or ""),
        job_id=job_id,
        queue=str(meta.get("queue") or "default"),
        enqueued_at=meta.get("enqueued_at"),
        started_at=meta.get("started_at"),
        ended_at=time.time(),
        outcome=FAILED if error else OK,
        error=error,
    )
    record_run(rt.redis, rt.keys, run)


def record_run(r: redis.Redis, keys: Keys, run: Run, limit: int = RUN_LOG_LIMIT) -> None:
    data = json.dumps(run.__dict__, default=str)
    pipe = r.pipeline(transaction=False)
    pipe.lpush(keys.scheduler_runs(run.site), data)
    pipe.ltrim(keys.scheduler_runs(run.site), 0, limit - 1)
    pipe.hset(keys.scheduler_last(run.site), run.job_name, data)
    pipe.execute()


def recent_runs(r: redis.Redis, keys: Keys, site: str, count: int = 50) -> list[Run]:
    """The site's newest runs, newest first."""
    return [Run(**json.loads(raw)) for raw in r.lrange(keys.scheduler_runs(site), 0, count - 1)]


def last_runs(r: redis.Redis, keys: Keys, site: str) -> dict[str, Run]:
    """``<event>::<method>`` -> the last finished run of that scheduled job on the site."""
    raw = r.hgetall(keys.scheduler_last(site))
    return {(k.decode() if isinstance(k, bytes) else k): Run(**json.loads(v)) for k, v in raw.items()}
