"""Job bodies used by the tests. Each reports into a Redis list named by the test."""

from __future__ import annotations

import json
import os
import time

import benchcelery
from benchcelery.runtime import get_runtime


def _push(key: str, value: object) -> None:
    get_runtime().redis.rpush(f"test:{key}", json.dumps(value))


def record(key: str, value: object = None) -> str:
    _push(key, value)
    return "ok"


def context(key: str) -> None:
    local = benchcelery.local
    _push(
        key,
        {
            "site": local.site,
            "user": local.user,
            "pid": os.getpid(),
            "job_id": (local.job or {}).get("job_id"),
            "conf_marker": local.conf.get("marker"),
        },
    )


def sleep_then_record(key: str, seconds: float, value: object = None) -> None:
    _push(key, {"start": value})
    time.sleep(seconds)
    _push(key, value)


def wait_for_flag(key: str, flag: str, value: object = None, limit: float = 60) -> None:
    """Signal it started, then run until the test sets ``test:<flag>`` (bounded by ``limit``)."""
    _push(key, {"start": value})
    r = get_runtime().redis
    deadline = time.monotonic() + limit
    while not r.exists(f"test:{flag}") and time.monotonic() < deadline:
        time.sleep(0.05)
    _push(key, value)


def fail(message: str = "boom") -> None:
    raise ValueError(message)


def noop() -> None:
    pass


def incr(key: str = "count") -> None:
    get_runtime().redis.incr(f"test:{key}")


def before_job(method: str, kwargs: dict) -> None:
    if "hooks" in kwargs.get("key", ""):
        _push(kwargs["key"], {"hook": "before", "method": method, "t": time.time()})


def after_job(method: str, kwargs: dict, result: object = None) -> None:
    if "hooks" in kwargs.get("key", ""):
        _push(kwargs["key"], {"hook": "after", "method": method, "result": result, "t": time.time()})


def pid_then_wait(key: str, flag: str, limit: float = 60) -> None:
    """Push this process's pid, then wait for ``test:<flag>``; used to kill a job mid-run."""
    _push(key, {"pid": os.getpid()})
    r = get_runtime().redis
    deadline = time.monotonic() + limit
    while not r.exists(f"test:{flag}") and time.monotonic() < deadline:
        time.sleep(0.05)
    _push(key, "done")


def publish_event(name: str, message: object = None, user: str | None = None, after_commit: bool = False) -> None:
    """Realtime tests: publish event ``name`` from inside a job (``event`` is enqueue's own keyword)."""
    benchcelery.publish_realtime(name, message, user=user, after_commit=after_commit)


def publish_then_fail(now_event: str, held_event: str, user: str | None = None) -> None:
    """Realtime tests: an event sent at once, one held for after_commit, then the job fails."""
    benchcelery.publish_realtime(now_event, {"sent": "now"}, user=user)
    benchcelery.publish_realtime(held_event, {"sent": "after_commit"}, user=user, after_commit=True)
    raise RuntimeError("job failed after publishing")


def fail_unless_flag(key: str, flag: str, n: int) -> None:
    """Fails until the test sets ``test:<flag>``; then records ``n``."""
    if not get_runtime().redis.exists(f"test:{flag}"):
        raise ValueError("not yet")
    _push(key, n)


def tally(run_id: str, seconds: float = 0.0) -> None:
    """Counts its own runs exactly: INCR of the run id's counter and SADD to the set of ids that ran."""
    if seconds:
        time.sleep(seconds)
    r = get_runtime().redis
    pipe = r.pipeline()
    pipe.incr(f"test:tally:{run_id}")
    pipe.sadd("test:tally", run_id)
    pipe.execute()


def has_realtime_permission(user: str, room: str) -> bool | None:
    """Realtime room hook (hooks.py): ToDo and Sales Order documents are open to every user; a
    task_progress room only to the user whose name prefixes the task id; anything else: no answer."""
    if room.startswith(("doc:ToDo/", "doctype:ToDo", "doc:Sales Order/")):
        return True
    if room.startswith("task_progress:"):
        return room.removeprefix("task_progress:").startswith(f"{user}-")
    return None


def flaky(key: str, fails: int, error: str = "ValueError") -> None:
    """Records the time of each run in ``test:<key>``; raises ``error`` (ValueError, KeyError,
    RetryJob) for the first ``fails`` runs, then records "done"."""
    r = get_runtime().redis
    runs = r.rpush(f"test:{key}", json.dumps(time.time()))
    if runs <= fails:
        if error == "RetryJob":
            raise benchcelery.RetryJob(in_seconds=1)
        raise {"ValueError": ValueError, "KeyError": KeyError}[error](f"attempt {runs} failed")
    _push(f"{key}:done", time.time())


@benchcelery.rate_limit("5/s")
def limited(key: str, value: object = None) -> None:
    """Rate-limited by its decorator (bench-wide): records when it started."""
    _push(key, {"value": value, "started": time.time()})


@benchcelery.rate_limit("1/h")
def hourly(key: str, value: object = None) -> None:
    _push(key, value)


@benchcelery.rate_limit("1/h", per_site=True)
def hourly_per_site(key: str) -> None:
    _push(key, benchcelery.local.site)
