"""The read-side figures of a bench, as dataclasses: what ``bench metrics``, ``show-pending-jobs``,
``doctor`` and the dashboard report.

Redis alone answers (no Celery import, no worker broadcast), in about ten round trips whose cost is
bounded whatever the number of waiting jobs: pending counts come from the per-site counters the
transport keeps, the oldest waiting job from the right end of each priority list (workers take from
the right, producers push at the left, so ``LINDEX -1`` is the oldest of a list; oldest.py).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from benchcelery.diagnostics.oldest import SITE_WINDOW, oldest_waiting
from benchcelery.diagnostics.workers import WorkerInfo, read_workers
from benchcelery.jobs import inspect, registry
from benchcelery.jobs.model import Job

if TYPE_CHECKING:
    import redis

    from benchcelery.bench.keys import Keys
    from benchcelery.runtime import Runtime

STUCK_MARGIN = 30  # seconds past a job's hard time limit before a started job counts as stuck


@dataclass
class QueueFigures:
    """One queue's jobs, per site. Ages are seconds at ``taken_at``; None = nothing waiting."""

    queue: str
    pending: dict[str, int] = field(default_factory=dict)
    oldest_enqueued_at: float | None = None  # the oldest waiting job of the queue (exact)
    site_oldest_enqueued_at: dict[str, float] = field(default_factory=dict)  # see oldest_waiting()
    started: dict[str, int] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)
    stuck: dict[str, int] = field(default_factory=dict)
    recovered: dict[str, int] = field(default_factory=dict)
    workers: int = 0  # live worker processes consuming the queue
    taken_at: float = 0.0
    configured: bool = True  # False: a queue no config names that holds failed records
    scheduled: dict[str, int] = field(default_factory=dict)  # site -> jobs that run later (enqueue_in/at)
    retrying: dict[str, int] = field(default_factory=dict)  # site -> jobs waiting for their next attempt
    paused: bool = False  # bench queue pause

    def oldest_age(self, site: str | None = None) -> float | None:
        at = self.oldest_enqueued_at if site is None else self.site_oldest_enqueued_at.get(site)
        return None if at is None else round(max(0.0, self.taken_at - at), 3)

    @property
    def sites(self) -> list[str]:
        names = set(self.pending) | set(self.started) | set(self.failed) | set(self.stuck) | set(self.recovered)
        return sorted(names)


@dataclass
class ScheduledJobRun:
    site: str
    job: str  # ``<event>::<method>``
    ended_at: float
    outcome: str  # ok / failed


@dataclass
class SchedulerFigures:
    alive: bool
    last_tick: float | None
    heartbeat: dict[str, Any] | None
    site_states: dict[str, str]  # site -> enabled / disabled / paused
    last_enqueue: dict[str, float]  # site -> when the scheduler last enqueued one of its jobs
    last_runs: list[ScheduledJobRun]


@dataclass
class DurationFigures:
    """A job-duration histogram of one method on one queue (buckets are cumulative, Prometheus-style)."""

    method: str
    queue: str
    buckets: list[tuple[float, int]]  # (upper bound, jobs that ran at most that long); last is +Inf
    total_seconds: float
    wait_buckets: list[tuple[float, int]] = field(default_factory=list)  # ... that waited at most that long
    wait_seconds: float = 0.0

    @property
    def count(self) -> int:
        return self.buckets[-1][1] if self.buckets else 0


@dataclass
class Figures:
    taken_at: float
    queues: list[QueueFigures]
    workers: list[WorkerInfo]
    scheduler: SchedulerFigures
    durations: list[DurationFigures]
    per_minute: list[tuple[str, str, str, int]] = field(default_factory=list)  # (site, queue, outcome, jobs)


# --- pieces (each usable alone) ---


def stuck_jobs(started: list[Job], hard_limits: dict[str, int], now: float) -> list[dict[str, Any]]:
    """Started jobs of live workers (lease held) running longer than their hard time limit plus a
    margin: the time limit did not stop them."""
    stuck = []
    for job in started:
        if job.extra.get("orphaned"):
            continue
        limit = int(job.extra.get("timeout") or hard_limits.get(job.queue, 0))
        age = now - (job.started_at or now)
        if limit and age > limit + STUCK_MARGIN:
            stuck.append({"id": job.id, "site": job.site, "method": job.method, "queue": job.queue, "age": round(age)})
    return stuck


def orphaned_jobs(started: list[Job], now: float) -> list[dict[str, Any]]:
    """Started jobs whose worker is gone (their lease lapsed): the next recovery sweep re-queues them."""
    return [
        {"id": j.id, "site": j.site, "method": j.method, "queue": j.queue, "age": round(now - (j.started_at or now))}
        for j in started
        if j.extra.get("orphaned")
    ]


def recovered_counts(r: redis.Redis, keys: Keys, queues: list[str]) -> dict[str, dict[str, int]]:
    """queue -> site -> jobs of dead workers put back in their queue (delivery.py's recovery)."""
    pipe = r.pipeline(transaction=False)
    for q in queues:
        pipe.hgetall(keys.recovered(q))
    return {q: {k.decode(): int(v) for k, v in raw.items()} for q, raw in zip(queues, pipe.execute(), strict=True)}


def delayed_counts(
    r: redis.Redis, keys: Keys, queues: list[str]
) -> tuple[dict[str, dict[str, int]], dict[str, dict[str, int]], set[str]]:
    """(queue -> site -> scheduled jobs, queue -> site -> retrying jobs, paused queues), from the
    counters the delayed-set scripts keep (broker/lua/promote.lua): one round trip, O(queues x sites)."""
    pipe = r.pipeline(transaction=False)
    pipe.smembers(keys.paused)
    for q in queues:
        pipe.hgetall(keys.scheduled_counts(q))
        pipe.hgetall(keys.retrying_counts(q))
    paused, *raw = pipe.execute()
    scheduled: dict[str, dict[str, int]] = {}
    retrying: dict[str, dict[str, int]] = {}
    for i, q in enumerate(queues):
        delayed = {k.decode(): max(0, int(v)) for k, v in raw[2 * i].items()}
        waiting = {k.decode(): max(0, int(v)) for k, v in raw[2 * i + 1].items()}
        retrying[q] = {s: min(n, delayed.get(s, 0)) for s, n in waiting.items() if n}
        scheduled[q] = {s: n - retrying[q].get(s, 0) for s, n in delayed.items() if n - retrying[q].get(s, 0)}
    return scheduled, retrying, {p.decode() for p in paused}


def queue_figures(
    rt: Runtime, now: float | None = None, window: int = SITE_WINDOW, workers: list[WorkerInfo] | None = None
) -> list[QueueFigures]:
    """Every configured queue's figures (only configured queues: control reply queues never count).
    ``workers``: the heartbeats, when the caller has read them already."""
    r, keys = rt.redis, rt.keys
    queues = list(rt.settings.queues)
    now = time.time() if now is None else now
    pending = inspect.count_pending(r, keys, queues)
    oldest = oldest_waiting(r, keys, pending, window)
    started_jobs = inspect.started_jobs(r, keys)
    hard_limits = {q.name: q.hard_limit for q in rt.settings.queues.values()}
    failed = registry.failed_counts(r, keys, queues)
    recovered = recovered_counts(r, keys, queues)
    live = [w for w in (read_workers(r, keys) if workers is None else workers) if w.alive]
    scheduled, retrying, paused = delayed_counts(r, keys, queues)
    out = []
    for q in queues:
        fig = QueueFigures(
            queue=q,
            pending=pending.get(q, {}),
            oldest_enqueued_at=oldest.get(q, (None, {}))[0],
            site_oldest_enqueued_at=oldest.get(q, (None, {}))[1],
            failed=failed.get(q, {}),
            recovered=recovered.get(q, {}),
            workers=sum(w.concurrency for w in live if q in w.queues),
            taken_at=now,
            scheduled=scheduled.get(q, {}),
            retrying=retrying.get(q, {}),
            paused=q in paused,
        )
        for job in started_jobs:
            if job.queue == q:
                fig.started[job.site] = fig.started.get(job.site, 0) + 1
        for item in stuck_jobs([j for j in started_jobs if j.queue == q], hard_limits, now):
            fig.stuck[item["site"]] = fig.stuck.get(item["site"], 0) + 1
        out.append(fig)
    return out


def scheduler_figures(rt: Runtime, sites: list[str]) -> SchedulerFigures:
    from benchcelery.scheduler.state import state_from_config

    r, keys, bench = rt.redis, rt.keys, rt.bench
    pipe = r.pipeline(transaction=False)
    pipe.get(keys.scheduler_heartbeat)
    pipe.hgetall(keys.scheduler_lastrun)
    for site in sites:
        pipe.hgetall(keys.scheduler_last(site))
    raw_hb, lastrun, *per_site = pipe.execute()
    heartbeat = json.loads(raw_hb) if raw_hb else None
    runs = []
    for site, raw in zip(sites, per_site, strict=True):
        for name, value in raw.items():
            try:
                run = json.loads(value)
                runs.append(ScheduledJobRun(site, name.decode(), float(run["ended_at"]), str(run["outcome"])))
            except (ValueError, KeyError, TypeError):
                continue
    return SchedulerFigures(
        alive=heartbeat is not None,
        last_tick=float(heartbeat["last_tick"]) if heartbeat and heartbeat.get("last_tick") else None,
        heartbeat=heartbeat,
        site_states={s: state_from_config(s, bench.merged_config(s)).state for s in sites},
        last_enqueue={k.decode(): float(v) for k, v in lastrun.items()},
        last_runs=runs,
    )


def stray_queue_figures(r: redis.Redis, keys: Keys, configured: list[str], now: float) -> list[QueueFigures]:
    """Failed records in queues no config names (a forged message's routing key), flagged."""
    stray = [q for q in registry.failed_queue_names(r, keys) if q not in configured]
    failed = registry.failed_counts(r, keys, stray)
    return [QueueFigures(queue=q, failed=failed.get(q, {}), taken_at=now, configured=False) for q in stray]


def duration_figures(
    r: redis.Redis, keys: Keys, queues: list[str], now: float | None = None, ttl: int | None = None
) -> list[DurationFigures]:
    """Duration histograms per (method, queue); series not written for ``ttl`` seconds are left out."""
    from benchcelery.jobs.durations import DEFAULT_TTL, LAST, SEP, SUM, WAIT, WAIT_MS

    cutoff = (time.time() if now is None else now) - (ttl or DEFAULT_TTL)

    pipe = r.pipeline(transaction=False)
    for q in queues:
        pipe.hgetall(keys.durations(q))
    out = []
    for q, raw in zip(queues, pipe.execute(), strict=True):
        per_method: dict[str, dict[str, float]] = {}
        for k, v in raw.items():
            method, _, slot = k.decode().rpartition(SEP)
            per_method.setdefault(method, {})[slot] = float(v)
        for method, slots in sorted(per_method.items()):
            if slots.get(LAST, cutoff) < cutoff:  # not written for ttl seconds (no LAST: older writer)
                continue
            wait = _cumulative(slots, WAIT) if WAIT_MS in slots else []
            out.append(
                DurationFigures(
                    method, q, _cumulative(slots, ""), slots.get(SUM, 0.0), wait, slots.get(WAIT_MS, 0.0) / 1000
                )
            )
    return out


def _cumulative(slots: dict[str, float], prefix: str) -> list[tuple[float, int]]:
    """Prometheus' cumulative buckets from the per-bucket counts ``<prefix><i>``."""
    from benchcelery.jobs.durations import BUCKETS

    running, buckets = 0, []
    for i, bound in enumerate((*BUCKETS, float("inf"))):
        running += int(slots.get(f"{prefix}{i}", 0))
        buckets.append((bound, running))
    return buckets


def minute_figures(r: redis.Redis, keys: Keys, now: float | None = None) -> list[tuple[str, str, str, int]]:
    """(site, queue, outcome, jobs) of the last complete minute, from the job history."""
    from benchcelery.diagnostics.history import NAMES, SEP, live
    from benchcelery.jobs.history import expand

    raw, current = live(r, keys, now, minutes=2)
    out: dict[tuple[str, str, str], int] = {}
    for fields in raw:
        for name, value in fields.items():
            parts = name.decode(errors="replace").split(SEP)
            if len(parts) == 4 and parts[0] == str(current - 1):
                for kind in expand(parts[3]):
                    key = (parts[1], parts[2], NAMES[kind])
                    out[key] = out.get(key, 0) + int(value)
    return [(*k, n) for k, n in sorted(out.items())]


def read_figures(rt: Runtime, window: int = SITE_WINDOW) -> Figures:
    """Everything ``bench metrics`` exports, in about ten round trips."""
    now = time.time()
    workers = read_workers(rt.redis, rt.keys)
    queues = queue_figures(rt, now, window, workers)
    ttl = int(rt.settings.get("durations_ttl") or 0) or None
    return Figures(
        taken_at=now,
        queues=queues + stray_queue_figures(rt.redis, rt.keys, [q.queue for q in queues], now),
        workers=workers,
        scheduler=scheduler_figures(rt, rt.bench.sites()),
        durations=duration_figures(rt.redis, rt.keys, [q.queue for q in queues], now, ttl),
        per_minute=minute_figures(rt.redis, rt.keys, now),
    )
