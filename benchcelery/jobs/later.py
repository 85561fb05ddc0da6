"""Jobs that run later (``enqueue_in`` / ``enqueue_at``) and the delayed set seen by operators:
listing scheduled and retrying jobs, running one now, cancelling one (giving up on a retry).

A delayed job is an entry of the bench's delayed set (broker/delayed.py) holding the message
exactly as ``enqueue`` would have pushed it; live workers and ``bench schedule`` move it to its
queue once due. It keeps its job id; a job enqueued with an explicit id shows the status
``scheduled`` (``retrying`` for a retry's next attempt) until it is moved.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from benchcelery.bench.keys import EXECUTE_JOB
from benchcelery.broker.delayed import LATER, RETRY, Delayed, Entry
from benchcelery.errors import ValidationError
from benchcelery.jobs import registry
from benchcelery.jobs.bulk import envelope, sender
from benchcelery.jobs.model import Job
from benchcelery.jobs.retry import GaveUp, attempts_of
from benchcelery.runtime import Runtime, get_runtime

MAX_DELAY = 10 * 365 * 86400  # seconds; a due time further out is a mistake


@dataclass(frozen=True)
class DelayedJob:
    """One delayed job as operators see it."""

    entry_id: str
    job_id: str
    site: str
    queue: str
    method: str
    kind: str  # "scheduled" (run later) or "retrying" (next attempt of a failed job)
    due: float
    attempts: list[dict[str, Any]]

    def as_dict(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id, "site": self.site, "queue": self.queue, "method": self.method,
            "state": self.kind, "due": self.due, "attempts": self.attempts,
        }  # fmt: skip


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
    from benchcelery.jobs.enqueue import _claim, _current_site, _prepare, check_kwargs

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
    if deduplicate and not _claim(rt, [job.id], True)[0]:
        return None
    origin, reply_to = sender()
    message = envelope(prepared.options, EXECUTE_JOB, origin, reply_to)
    o = prepared.options
    entry = Entry(
        id=json.loads(message)["properties"]["delivery_tag"],
        list=rt.keys.queue_list(o["queue"], o["priority"]),
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


def delayed_jobs(rt: Runtime, kind: str | None = None, limit: int = 1000) -> list[DelayedJob]:
    """The delayed jobs, earliest due first (``kind``: "scheduled" or "retrying" only), at most ``limit``."""
    keys, start = rt.keys, 0
    out: list[DelayedJob] = []
    want = {None: None, registry.SCHEDULED: LATER, registry.RETRYING: RETRY}[kind]
    while len(out) < limit:
        page = rt.redis.zrange(keys.delayed, start, start + 999, withscores=True)
        if not page:
            break
        start += len(page)
        raws = rt.redis.hmget(keys.delayed_data, [member for member, _ in page])
        for (member, due), raw in zip(page, raws, strict=True):
            if raw is None:
                continue
            entry = Entry.decode(member.decode(), raw)
            if want is None or entry.kind == want:
                out.append(_row(entry, due))
    return out[:limit]


def _row(entry: Entry, due: float) -> DelayedJob:
    try:
        headers = json.loads(entry.message).get("headers") or {}
    except ValueError:
        headers = {}
    kind = registry.RETRYING if entry.kind == RETRY else registry.SCHEDULED
    method = str(headers.get("method") or "")
    attempts = attempts_of(headers.get("attempts"))
    return DelayedJob(entry.id, entry.job_id, entry.site, entry.queue, method, kind, float(due), attempts)


def find(rt: Runtime, job_id: str) -> DelayedJob | None:
    """The delayed job with this full id, or None."""
    member = rt.redis.hget(rt.keys.delayed_ids, job_id)
    if member is None:
        return None
    pipe = rt.redis.pipeline(transaction=False)
    pipe.hget(rt.keys.delayed_data, member).zscore(rt.keys.delayed, member)
    raw, due = pipe.execute()
    return None if raw is None or due is None else _row(Entry.decode(member.decode(), raw), due)


def find_prefix(rt: Runtime, prefix: str) -> list[str]:
    """Full ids of delayed jobs whose id starts with ``prefix``."""
    pattern = prefix.replace("\\", "\\\\").replace("*", "\\*").replace("?", "\\?").replace("[", "\\[") + "*"
    return [k.decode() for k, _ in rt.redis.hscan_iter(rt.keys.delayed_ids, match=pattern, count=1000)]


def run_now(rt: Runtime, job_id: str) -> bool:
    """Move the delayed job ``job_id`` to its queue now; False when it is not delayed (any more)."""
    member = rt.redis.hget(rt.keys.delayed_ids, job_id)
    return member is not None and Delayed(rt.redis, rt.keys).run_now(member.decode())


def cancel(rt: Runtime, job_id: str) -> DelayedJob | None:
    """Take the delayed job ``job_id`` out: a scheduled one never runs; a retrying one is given up and
    recorded as failed with its attempts. None when it is not delayed (any more)."""
    from benchcelery.jobs.failures import record

    member = rt.redis.hget(rt.keys.delayed_ids, job_id)
    entry = Delayed(rt.redis, rt.keys).unschedule(member.decode()) if member else None
    if entry is None:
        return None
    row = _row(entry, 0.0)
    if entry.kind == RETRY:
        headers = json.loads(entry.message).get("headers") or {}
        meta = {"job_id": entry.job_id, "site": entry.site, "queue": entry.queue, "method": row.method,
                "event": headers.get("event"), "user": headers.get("user"), "job_name": headers.get("job_name"),
                "enqueued_at": headers.get("enqueued_at"), "attempts": row.attempts}  # fmt: skip
        record(meta, {}, GaveUp("no more attempts: given up by an operator (bench jobs give-up)"), None)
    return row


def counts(rt: Runtime, queues: Iterable[str]) -> dict[str, dict[str, int]]:
    """Delayed jobs per queue and site (scheduled and retrying), from the counters (one pipeline)."""
    names = list(queues)
    pipe = rt.redis.pipeline(transaction=False)
    for queue in names:
        pipe.hgetall(rt.keys.scheduled_counts(queue))
    out: dict[str, dict[str, int]] = {}
    for queue, found in zip(names, pipe.execute(), strict=True):
        out[queue] = {k.decode(): int(v) for k, v in found.items() if int(v) > 0}
    return out


def purge(rt: Runtime, sites: list[str] | None, queues: Iterable[str]) -> int:
    """Cancel every delayed job of ``sites`` (None = all) in ``queues`` (retries are dropped, not
    recorded as failed); returns how many."""
    wanted = set(queues)
    delayed = Delayed(rt.redis, rt.keys)
    done = 0
    for row in delayed_jobs(rt, limit=10**9):
        if row.queue in wanted and (sites is None or row.site in sites) and delayed.unschedule(row.entry_id):
            done += 1
    return done


def count_for(rt: Runtime, sites: list[str] | None, queues: Iterable[str]) -> int:
    """Delayed jobs of ``sites`` (None = all) in ``queues``, from the counters."""
    found = counts(rt, queues).values()
    return sum(n for per_site in found for s, n in per_site.items() if sites is None or s in sites)
