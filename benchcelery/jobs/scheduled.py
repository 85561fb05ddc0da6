"""The delayed set as operators see it: scheduled jobs (run later) and retrying ones (waiting for
their next attempt). Listing, finding, running one now, cancelling one (giving up on a retry: it
is recorded as failed with its attempts), purging, counting per queue and site.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from benchcelery.broker.delayed import LATER, RETRY, Delayed, Entry
from benchcelery.jobs import registry
from benchcelery.jobs.retry import GaveUp, attempts_of
from benchcelery.runtime import Runtime


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


def by_kind(rt: Runtime, queues: Iterable[str]) -> dict[str, dict[str, int]]:
    """Per queue: its delayed jobs split into ``scheduled`` (run later) and ``retrying`` (waiting for
    their next attempt), from the counters (one pipeline; O(queues x sites), not O(delayed jobs))."""
    names = list(queues)
    pipe = rt.redis.pipeline(transaction=False)
    for queue in names:
        pipe.hvals(rt.keys.scheduled_counts(queue))
        pipe.hvals(rt.keys.retrying_counts(queue))
    found = pipe.execute()
    out: dict[str, dict[str, int]] = {}
    for i, queue in enumerate(names):
        delayed = sum(max(0, int(v)) for v in found[2 * i])
        retrying = min(delayed, sum(max(0, int(v)) for v in found[2 * i + 1]))
        out[queue] = {"scheduled": delayed - retrying, "retrying": retrying}
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
