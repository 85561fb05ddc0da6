"""The read-side figures of a bench, as dataclasses: what ``bench metrics``, ``show-pending-jobs``,
``doctor`` and the dashboard report.

Redis alone answers (no Celery import, no worker broadcast), in about ten round trips whose cost is
bounded whatever the number of waiting jobs: pending counts come from the per-site counters the
transport keeps, the oldest waiting job from the right end of each priority list (workers take from
the right, producers push at the left, so ``LINDEX -1`` is the oldest of a list).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from benchcelery.diagnostics.workers import WorkerInfo, read_workers
from benchcelery.jobs import inspect, registry
from benchcelery.jobs.model import Job

if TYPE_CHECKING:
    import redis

    from benchcelery.bench.keys import Keys
    from benchcelery.runtime import Runtime

STUCK_MARGIN = 30  # seconds past a job's hard time limit before a started job counts as stuck
SITE_WINDOW = 10_000  # messages read per priority list (at most) to find each site's oldest job

# Oldest waiting job per queue and per site, without reading whole queues. KEYS: every priority
# list of every queue, in order; ARGV: window, then per queue: number of lists, number of sites with
# waiting jobs (the scan of a list stops once it has seen that many sites). Returns per queue
# {queue oldest, site, enqueued_at, site, enqueued_at, ...}, timestamps as strings ('' = unknown).
_OLDEST = """
local window = tonumber(ARGV[1])
local out = {}
local k = 1
local a = 2
while a <= #ARGV do
  local nlists, nsites = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  a = a + 2
  local oldest = nil
  local sites = {}
  for l = 1, nlists do
    local key = KEYS[k]
    k = k + 1
    local len = redis.call('LLEN', key)
    local here = {}
    local seen = 0
    local pos = -1
    while pos >= -len and pos >= -window do
      local items = redis.call('LRANGE', key, math.max(-len, pos - 99, -window), pos)
      for i = #items, 1, -1 do
        local item = items[i]
        local site = '?'
        local s = string.find(item, '"id": "', 1, true)
        if s then
          local e = string.find(item, '"', s + 7, true)
          site = e and string.match(string.sub(item, s + 7, e - 1), '^([^:]*)::') or '?'
        end
        local first = pos == -1 and i == #items
        if first or here[site] == nil then
          -- plain find first (fast); the pattern only for an unusually formatted message
          local p = string.find(item, '"enqueued_at": ', 1, true)
          local at = tonumber(p and string.match(item, '^[-%d%.eE+]+', p + 15)
            or string.match(item, '"enqueued_at":%s*([-%d%.eE+]+)'))
          if at then
            if first and (oldest == nil or at < oldest) then oldest = at end
            if sites[site] == nil or at < sites[site] then sites[site] = at end
          end
          if here[site] == nil then
            here[site] = true
            seen = seen + 1
          end
        end
      end
      pos = pos - #items
      if seen >= nsites or #items == 0 then break end
    end
  end
  local row = {oldest and string.format('%.6f', oldest) or ''}
  for site, at in pairs(sites) do
    table.insert(row, site)
    table.insert(row, string.format('%.6f', at))
  end
  table.insert(out, row)
end
return out
"""


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


def oldest_waiting(
    r: redis.Redis, keys: Keys, pending: dict[str, dict[str, int]], window: int = SITE_WINDOW
) -> dict[str, tuple[float | None, dict[str, float]]]:
    """queue -> (enqueue time of its oldest waiting job, site -> enqueue time of the site's oldest).

    The queue's figure is exact (the right end of each priority list). A site's figure is the oldest
    of its jobs among the ``window`` oldest messages of each list (a list is read from its oldest end
    until every site with waiting jobs was seen); a site none of whose jobs is among them is left out.
    One script call over kombu's per-queue lists (messages not yet moved to their site's lists);
    each site's own lists add their oldest message each (one pipelined LINDEX per list, exact).
    """
    queues = list(pending)
    if not queues:
        return {}
    lists: list[str] = []
    argv: list[int] = [window]
    for q in queues:
        names = keys.queue_lists(q)
        lists += names
        argv += [len(names), sum(1 for n in pending[q].values() if n > 0)]
    rows = r.register_script(_OLDEST)(keys=lists, args=argv)
    out: dict[str, tuple[float | None, dict[str, float]]] = {}
    for q, row in zip(queues, rows, strict=True):
        texts = [x.decode() if isinstance(x, bytes) else str(x) for x in row]
        oldest = float(texts[0]) if texts and texts[0] else None
        out[q] = (oldest, {texts[i]: float(texts[i + 1]) for i in range(1, len(texts) - 1, 2)})
    _add_site_oldest(r, keys, pending, out)
    return out


_ENQUEUED_AT = re.compile(rb'"enqueued_at":\s*([-0-9.eE+]+)')


def _add_site_oldest(
    r: redis.Redis,
    keys: Keys,
    pending: dict[str, dict[str, int]],
    out: dict[str, tuple[float | None, dict[str, float]]],
) -> None:
    """Fold the oldest message of each site's own lists (their right ends) into ``out``."""
    pipe = r.pipeline(transaction=False)
    wanted = [(q, site) for q, per_site in pending.items() for site, n in per_site.items() if n > 0]
    for q, site in wanted:
        for key in keys.site_lists(q, site):
            pipe.lindex(key, -1)
    items = iter(pipe.execute() if wanted else [])
    for q, site in wanted:
        oldest, sites = out[q]
        for item in [next(items) for _ in keys.site_lists(q, site)]:
            found = _ENQUEUED_AT.search(item) if item else None
            at = float(found.group(1)) if found else None
            if at is None:
                continue
            sites[site] = min(at, sites.get(site, at))
            oldest = at if oldest is None else min(oldest, at)
        out[q] = (oldest, sites)


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
