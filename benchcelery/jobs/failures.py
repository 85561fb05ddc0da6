"""Failure records: how a job that ended badly lands in the failed-job registry.

Written from three places: the pool process when the method raises or exceeds its timeout
(execute.py), the worker's main process when the pool process died, was killed or exceeded the
hard limit (request.py), and the worker's consumer or transport for a message that could not run
at all (unknown task, malformed message). Recording never raises: a worker must keep running.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

import redis
from billiard.exceptions import SoftTimeLimitExceeded
from celery.exceptions import TimeLimitExceeded

from benchcelery.bench.keys import UNKNOWN_SITE
from benchcelery.jobs import durations, history, registry, safe
from benchcelery.runtime import get_runtime

logger = logging.getLogger("benchcelery.job")

RECORD_WAIT = 600.0  # s a pool process keeps trying to record its job's failure before giving up

# What one failure record keeps at most (a failing job with 10 MB of arguments must not write a
# 30 MB record, nor make every page that lists failures read it).
RAW_CAP = 4000  # characters of a malformed message kept in its failure record
KWARGS_CAP = 64 * 1024  # characters of the job's arguments as JSON; larger ones keep KWARGS_HEAD
KWARGS_HEAD = 4000
EXCEPTION_CAP = 2000  # characters of the exception line
TRACEBACK_HEAD, TRACEBACK_TAIL = 4000, 12000  # characters kept from each end of a longer traceback
FIELD_CAP = 1000  # characters of the other text fields (method, user, job name, event, worker)
_PARSE_CAP = 1024 * 1024  # a malformed element's bytes read to find its job id, site and method


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
        origin = exc.args[0] if exc.args and isinstance(exc.args[0], str) and exc.args[0] != "terminated" else ""
        return f"JobTerminated: stopped while running ({origin or 'bench jobs cancel --terminate'})"
    if isinstance(exc, TimeLimitExceeded):
        return f"JobTimeoutException: Job killed after its hard time limit ({exc.args[0]} seconds)"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def record_malformed(queue: str, raw: bytes | str, reason: str, tag: str) -> None:
    """Record a queue element the worker does not run: not a valid message, or one whose workers
    died on it too often (then its job id, site, method and arguments are kept, so it can be
    retried). Never raises."""
    head = raw[: RAW_CAP * 4]
    text = head.decode("utf-8", "replace") if isinstance(head, bytes) else str(head)
    meta: dict[str, Any] = {"job_id": f"{UNKNOWN_SITE}::{tag}", "site": UNKNOWN_SITE, "queue": queue, "method": ""}
    kwargs: dict[str, Any] = {}
    info = safe.describe_message(raw, tag) if len(raw) <= _PARSE_CAP else None
    if info is not None and info["site"] != UNKNOWN_SITE:
        job_id = info["id"] if "::" in info["id"] else f"{UNKNOWN_SITE}::{info['id']}"
        headers = info["headers"]
        meta.update({k: headers.get(k) for k in ("event", "user", "job_name", "enqueued_at")})
        meta.update(job_id=job_id, site=info["site"], method=info["method"])
        kwargs = info["kwargs"]
    record(meta, kwargs, ValueError(reason), None, raw=text[:RAW_CAP])


def _count_failure(rt: Any, meta: dict[str, Any]) -> None:
    """Count the failure in the duration histogram and the history, in one round trip."""
    pipe = rt.redis.pipeline(transaction=False)
    durations.observe(pipe, rt.keys, meta, waits=history.retention().enabled)
    for command in history.finished(rt.keys, meta, failed=True):
        pipe.execute_command(*command)
    pipe.execute(raise_on_error=False)


def cap_text(text: str, cap: int) -> str:
    """``text`` cut to ``cap`` characters, saying how much was cut."""
    if len(text) <= cap:
        return text
    return f"{text[:cap]}... [{len(text) - cap} characters cut]"


def cap_traceback(tb: str) -> str:
    """The head and the tail of a long traceback (where it started and where it failed)."""
    if len(tb) <= TRACEBACK_HEAD + TRACEBACK_TAIL:
        return tb
    cut = len(tb) - TRACEBACK_HEAD - TRACEBACK_TAIL
    return f"{tb[:TRACEBACK_HEAD]}\n... [{cut} characters cut] ...\n{tb[-TRACEBACK_TAIL:]}"


def _capped_kwargs(kwargs: Any) -> tuple[Any, str | None]:
    """(kwargs, None) when small enough; else (None, the head of their JSON): a record whose
    arguments were cut cannot be retried with them."""
    try:
        text = json.dumps(kwargs, default=str)
    except (ValueError, TypeError, RecursionError):
        return None, "[arguments that cannot be shown]"
    if len(text) <= KWARGS_CAP:
        return kwargs, None
    return None, cap_text(text, KWARGS_HEAD)


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
        fields = {k: meta.get(k) for k in ("site", "queue", "method", "event", "user", "job_name", "worker")}
        kept, cut = _capped_kwargs(kwargs)
        rec = {
            "job_id": meta.get("job_id"),
            **{k: cap_text(v, FIELD_CAP) if isinstance(v, str) else v for k, v in fields.items()},
            **{k: meta.get(k) for k in ("enqueued_at", "started_at", "timeout")},
            "kwargs": kept,
            "exception": cap_text(describe_exception(exc, meta.get("timeout")), EXCEPTION_CAP),
            "traceback": cap_traceback(tb or ""),
            "pid": os.getpid(),
        }
        if cut is not None:
            rec["kwargs_cut"] = cut
        if raw is not None:
            rec["raw"] = raw[:RAW_CAP]
        if meta.get("attempts"):  # a retried job: every attempt, this one last (jobs/retry.py)
            rec["attempts"] = [*meta["attempts"], {"at": time.time(), "exception": rec["exception"]}]
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
            _count_failure(rt, meta)  # failed runs count in the duration histogram and the history too
        except redis.RedisError as err:
            logger.warning("Could not count the failure of job %s: %s", meta.get("job_id"), err)
        notify_finished(meta, rec["exception"])
    except Exception:
        logger.exception("Could not record the failure of job %s", meta.get("job_id"))
