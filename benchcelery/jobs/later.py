"""Jobs that run later: ``enqueue_in`` / ``enqueue_at``.

A delayed job is an entry of the bench's delayed set (broker/delayed.py) holding the message
exactly as ``enqueue`` would have pushed it; live workers and ``bench schedule`` move it to its
queue once due. It keeps its job id; a job enqueued with an explicit id shows the status
``scheduled`` until it is moved. Listing, running now and cancelling are in jobs/scheduled.py.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any

from benchcelery.bench.keys import EXECUTE_JOB
from benchcelery.broker.delayed import LATER, Delayed, Entry
from benchcelery.errors import ValidationError
from benchcelery.jobs import ratelimit, registry
from benchcelery.jobs.bulk import envelope, sender
from benchcelery.jobs.enqueue import _claim, _current_site, _prepare, check_kwargs
from benchcelery.jobs.model import Job
from benchcelery.runtime import get_runtime

MAX_DELAY = 10 * 365 * 86400  # seconds; a due time further out is a mistake


def enqueue_in(delay: float | dt.timedelta, method: str | Callable[..., Any], **enqueue_kwargs: Any) -> Job | None:
    """``enqueue(method, **enqueue_kwargs)``, run no earlier than ``delay`` (seconds or a timedelta)
    from now (Redis's clock). Returns the Job (state ``scheduled``), or None when ``deduplicate``
    found the same ``job_id`` queued, running or scheduled."""
    seconds = delay.total_seconds() if isinstance(delay, dt.timedelta) else delay
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not 0 <= seconds <= MAX_DELAY:
        raise ValidationError(f"enqueue_in takes seconds (0..{MAX_DELAY}) or a timedelta, got {delay!r}")
    return _later(method, None, float(seconds), enqueue_kwargs)


def enqueue_at(when: dt.datetime | float, method: str | Callable[..., Any], **enqueue_kwargs: Any) -> Job | None:
    """``enqueue(method, **enqueue_kwargs)``, run no earlier than ``when`` (a datetime; a naive one is
    this host's local time, as ``datetime.timestamp`` reads it; or epoch seconds). A time already
    past runs at once."""
    at = when.timestamp() if isinstance(when, dt.datetime) else when
    if isinstance(at, bool) or not isinstance(at, int | float):
        raise ValidationError(f"enqueue_at takes a datetime or epoch seconds, got {when!r}")
    return _later(method, float(at), 0.0, enqueue_kwargs)


def _later(method: str | Callable[..., Any], at: float | None, seconds: float, kwargs: dict[str, Any]) -> Job | None:
    for name in ("now", "is_async", "enqueue_after_commit"):
        if kwargs.pop(name, False) and name != "is_async":
            raise ValidationError(f"enqueue_in/enqueue_at do not take {name}")
    options = {k: kwargs.pop(k) for k in _ENQUEUE_OPTIONS if k in kwargs}
    job_kwargs = kwargs.pop("kwargs", None) or kwargs
    check_kwargs(job_kwargs)
    rt = get_runtime()
    site = _current_site()
    deduplicate = bool(options.pop("deduplicate", False))
    if deduplicate and not options.get("job_id"):
        raise ValidationError("`job_id` parameter is required for deduplication.")
    prepared = _prepare(rt, site, method, kwargs=job_kwargs, **options)
    job = prepared.job
    if prepared.limit is not None:  # in Redis before the job can be moved to its queue
        ratelimit.write(rt.redis, rt.keys, {job.method: prepared.limit})
    if deduplicate and not _claim(rt, [job.id], True)[0]:
        return None
    origin, reply_to = sender()
    message = envelope(prepared.options, EXECUTE_JOB, origin, reply_to)
    o = prepared.options
    entry = Entry(
        id=json.loads(message)["properties"]["delivery_tag"],
        list=rt.keys.site_list(o["queue"], site, o["priority"]),
        queue=o["queue"],
        site=site,
        job_id=job.id,
        kind=LATER,
        message=message,
        status_key=rt.keys.job_status(job.id) if options.get("job_id") else "",
    )
    ttl = int(max(0.0, (at or 0.0) - rt.redis.time()[0]) + seconds) + rt.settings.number("rq_job_failure_ttl")
    try:
        due = Delayed(rt.redis, rt.keys).delay(entry, at=at, seconds=seconds, status=registry.SCHEDULED, ttl=ttl)
    except BaseException:
        if deduplicate:
            rt.redis.delete(rt.keys.job_status(job.id))
        raise
    job.state = registry.SCHEDULED
    job.extra["due"] = due
    return job


_ENQUEUE_OPTIONS = ("queue", "timeout", "event", "job_name", "at_front", "job_id", "deduplicate", "on_success",
                    "on_failure", "retry")  # fmt: skip
