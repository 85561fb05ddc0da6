"""Failure records: how a job that ended badly lands in the failed-job registry.

Written from three places: the pool process when the method raises or exceeds its timeout
(execute.py), the worker's main process when the pool process died, was killed or exceeded the
hard limit (request.py), and the worker's consumer or transport for a message that could not run
at all (unknown task, malformed message). Recording never raises: a worker must keep running.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import redis
from billiard.exceptions import SoftTimeLimitExceeded
from celery.exceptions import TimeLimitExceeded

from benchcelery.bench.keys import UNKNOWN_SITE
from benchcelery.jobs import durations, registry
from benchcelery.runtime import get_runtime

logger = logging.getLogger("benchcelery.job")

RECORD_WAIT = 600.0  # s a pool process keeps trying to record its job's failure before giving up
RAW_CAP = 4000  # characters of a malformed message kept in its failure record


def notify_finished(meta: dict[str, Any], error: str | None) -> None:
    """Tell the listeners (the scheduler's run log) how a scheduled job (one with an ``event``) ended."""
    if not meta.get("event"):
        return
    from benchcelery.jobs.listeners import job_finished

    try:
        job_finished(meta, error)
    except Exception:
        logger.exception("Could not record the run of scheduled job %s", meta.get("job_id"))


def describe_exception(exc: BaseException, timeout: int | None = None) -> str:
    if isinstance(exc, SoftTimeLimitExceeded):
        return f"JobTimeoutException: Job exceeded maximum timeout value ({timeout} seconds)"
    if isinstance(exc, SystemExit | KeyboardInterrupt):
        return "JobTerminated: stopped while running (bench jobs cancel --terminate)"
    if isinstance(exc, TimeLimitExceeded):
        return f"JobTimeoutException: Job killed after its hard time limit ({exc.args[0]} seconds)"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def record_malformed(queue: str, raw: bytes | str, reason: str, tag: str) -> None:
    """Record a queue element that is not a valid message (never raises)."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    meta = {"job_id": f"{UNKNOWN_SITE}::{tag}", "site": UNKNOWN_SITE, "queue": queue, "method": ""}
    record(meta, {}, ValueError(reason), None, raw=text[:RAW_CAP])


def record(
    meta: dict[str, Any], kwargs: Any, exc: BaseException, tb: str | None, raw: str | None = None, wait: float = 0.0
) -> None:
    """Write the failure to the registry; never raises (a worker must keep running).

    ``wait``: for that long, a registry write that fails (Redis unreachable) is tried again before
    this returns; the pool process passes RECORD_WAIT, so its job, not yet acknowledged, stays in
    flight (leased) until its failure is recorded. The registry write runs even when Redis is out
    of memory (registry.py)."""
    try:
        rt = get_runtime()
        rec = {
            **{k: meta.get(k) for k in ("job_id", "site", "queue", "method", "event", "user", "job_name")},
            **{k: meta.get(k) for k in ("worker", "enqueued_at", "started_at", "timeout")},
            "kwargs": kwargs,
            "exception": describe_exception(exc, meta.get("timeout")),
            "traceback": tb or "",
            "pid": os.getpid(),
        }
        if raw is not None:
            rec["raw"] = raw
        queue = meta.get("queue") or "default"
        deadline = time.monotonic() + wait
        while True:
            try:
                registry.record_failure(
                    rt.redis,
                    rt.keys,
                    queue,
                    rec,
                    limit=rt.settings.number("rq_failed_jobs_limit"),
                    ttl=rt.settings.number("rq_job_failure_ttl"),
                )
                break
            except redis.RedisError as err:
                if time.monotonic() >= deadline:
                    raise
                logger.warning("Could not record the failure of job %s yet, trying again: %s", meta.get("job_id"), err)
                time.sleep(1.0)
        logger.info("Recorded the failure of job %s (%s): %s", meta.get("job_id"), meta.get("method"), rec["exception"])
        try:  # counters only (refused while Redis is out of memory): the record is written
            if meta.get("tracked"):
                rt.redis.delete(rt.keys.job_status(meta["job_id"]))
            name = meta.get("worker")
            if name:
                rt.redis.hincrby(rt.keys.worker(name), "failed", 1)
            durations.record(rt.redis, rt.keys, meta)  # failed runs count in the duration histogram too
        except redis.RedisError as err:
            logger.warning("Could not count the failure of job %s: %s", meta.get("job_id"), err)
        notify_finished(meta, rec["exception"])
    except Exception:
        logger.exception("Could not record the failure of job %s", meta.get("job_id"))
