"""What the dashboard shows, read with the functions the CLI uses (no Celery import).

- counts: ``inspect.count_pending`` / ``started_counts`` and ``registry.failed_counts`` — the
  functions behind ``show-pending-jobs`` — taken once and split by site;
- oldest waiting job: ``diagnostics.oldest`` (over ``figures.oldest_waiting``, as metrics and doctor);
- workers: ``diagnostics.workers.read_workers``; running jobs: ``inspect.started_jobs``;
- scheduler: ``scheduler.status.scheduler_status`` per site;
- failed jobs: ``registry.failed_ids`` / ``failed_records``; waiting jobs: ``inspect.iter_pending``
  (LRANGE windows of 1,000, stopped once the page is full: a queue is never loaded whole).
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Any

from benchcelery.diagnostics.oldest import OldestAge, oldest_ages
from benchcelery.diagnostics.workers import WorkerInfo, read_workers
from benchcelery.jobs import inspect, registry
from benchcelery.jobs.model import Job
from benchcelery.runtime import Runtime

# Health of a queue cell, from the age of its oldest waiting job (s) and whether a live worker serves it.
WARN_AGE = 60
BAD_AGE = 600
PAGE_SIZE = 50


@dataclass
class Cell:
    pending: int = 0
    started: int = 0
    failed: int = 0
    oldest: OldestAge | None = None
    health: str = "idle"  # idle / ok / warn / bad


@dataclass
class Overview:
    sites: list[str]
    queues: list[str]
    cells: dict[tuple[str, str], Cell]  # (site, queue); site "" = the whole queue
    workers: list[WorkerInfo]
    running: list[Job]
    schedulers: list[Any]  # scheduler.status.SchedulerStatus per site
    next_runs: dict[str, float]  # site -> soonest next run of its scheduled jobs
    generated_at: float = field(default_factory=time.time)

    def cell(self, site: str, queue: str) -> Cell:
        return self.cells.get((site, queue)) or Cell()

    @property
    def totals(self) -> Cell:
        cells = [self.cell("", q) for q in self.queues]
        return Cell(
            pending=sum(c.pending for c in cells),
            started=sum(c.started for c in cells),
            failed=sum(c.failed for c in cells),
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "generated_at": self.generated_at,
            "queues": {
                q: {
                    (site or "*"): {
                        "pending": c.pending,
                        "started": c.started,
                        "failed": c.failed,
                        "oldest_age": c.oldest.seconds if c.oldest else None,
                        "health": c.health,
                    }
                    for site in ["", *self.sites]
                    for c in [self.cell(site, q)]
                }
                for q in self.queues
            },
            "workers": [{"name": w.name, "alive": w.alive, "queues": w.queues} for w in self.workers],
            "schedulers": {s.site: s.status for s in self.schedulers},
        }


def health(pending: int, oldest: OldestAge | None, served: bool) -> str:
    if not pending:
        return "idle"
    if not served:
        return "bad"
    age = oldest.seconds if oldest else 0
    if age >= BAD_AGE:
        return "bad"
    return "warn" if age >= WARN_AGE else "ok"


def overview(rt: Runtime, with_scheduler: bool = True) -> Overview:
    from benchcelery.scheduler.status import scheduler_status

    r, keys = rt.redis, rt.keys
    queues = list(rt.settings.queues)
    sites = rt.bench.sites()
    pending = inspect.count_pending(r, keys, queues)
    running = inspect.started_jobs(r, keys)
    started_counts = inspect.started_counts(r, keys)
    failed = registry.failed_counts(r, keys, queues)
    ages = oldest_ages(r, keys, queues, pending)
    workers = read_workers(r, keys)
    served = {q for w in workers if w.alive for q in w.queues}
    cells: dict[tuple[str, str], Cell] = {}
    for q in queues:
        started = started_counts.get(q, {})
        names = set(sites) | set(pending.get(q, {})) | set(failed.get(q, {})) | set(started)
        for site in names:
            cell = Cell(
                pending=pending.get(q, {}).get(site, 0),
                started=started.get(site, 0),
                failed=failed.get(q, {}).get(site, 0),
                oldest=ages.get(q, {}).get(site),
            )
            cell.health = health(cell.pending, cell.oldest, q in served)
            cells[(site, q)] = cell
        total = Cell(
            pending=sum(pending.get(q, {}).values()),
            started=sum(started.values()),
            failed=sum(failed.get(q, {}).values()),
            oldest=ages.get(q, {}).get(""),
        )
        total.health = health(total.pending, total.oldest, q in served)
        cells[("", q)] = total
    extra = sorted({s for (s, _q) in cells if s and s not in sites})  # jobs of removed sites
    schedulers = [scheduler_status(rt, site, jobs=False) for site in sites] if with_scheduler else []
    return Overview(
        sites=sites + extra,
        queues=queues,
        cells=cells,
        workers=workers,
        running=running,
        schedulers=schedulers,
        next_runs=next_runs(rt) if with_scheduler else {},
    )


def next_runs(rt: Runtime) -> dict[str, float]:
    """site -> soonest due time among its RedBeat entries (one ZRANGE of the schedule)."""
    prefix = rt.keys.redbeat_prefix
    out: dict[str, float] = {}
    for raw, score in rt.redis.zrange(rt.keys.redbeat_schedule, 0, -1, withscores=True):
        name = raw.decode().removeprefix(prefix)
        site = name.split("::", 1)[0]
        if score >= 0 and (site not in out or score < out[site]):
            out[site] = score
    return out


# --- failed jobs ---
@dataclass(frozen=True)
class FailedFilter:
    site: str = ""
    queue: str = ""
    method: str = ""
    text: str = ""  # in the exception (and traceback)

    def matches(self, job: Job) -> bool:
        if self.site and job.site != self.site:
            return False
        if self.method and self.method.lower() not in job.method.lower():
            return False
        if self.text:
            haystack = f"{job.extra.get('exception') or ''}\n{job.extra.get('traceback') or ''}".lower()
            if self.text.lower() not in haystack:
                return False
        return True

    def as_query(self) -> dict[str, str]:
        return {
            k: v
            for k, v in (("site", self.site), ("queue", self.queue), ("method", self.method), ("text", self.text))
            if v
        }


def failed_jobs(rt: Runtime, flt: FailedFilter) -> list[Job]:
    """Failed jobs matching ``flt``, newest first (the registry keeps at most rq_failed_jobs_limit per queue)."""
    r, keys = rt.redis, rt.keys
    queues = [flt.queue] if flt.queue else list(rt.settings.queues)
    out: list[Job] = []
    for q in queues:
        ids = registry.failed_ids(r, keys, q, site=flt.site or None)
        out += [j for j in map(inspect.failed_info, registry.failed_records(r, keys, q, ids)) if flt.matches(j)]
    out.sort(key=lambda j: j.extra.get("failed_at") or 0, reverse=True)
    return out


# --- queued and running jobs ---
@dataclass
class JobPage:
    site: str
    queue: str
    state: str  # queued / started
    page: int
    jobs: list[Job]
    total: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // PAGE_SIZE))


def job_page(rt: Runtime, site: str, queue: str, state: str, page: int) -> JobPage:
    """One page of a site's waiting (in the order workers take them) or running jobs of a queue."""
    r, keys = rt.redis, rt.keys
    rt.settings.validate_queue(queue)
    rt.bench.require_site(site)
    page = max(1, page)
    start = (page - 1) * PAGE_SIZE
    if state == registry.STARTED:
        running = [j for j in inspect.started_jobs(r, keys, site=site) if j.queue == queue]
        return JobPage(site, queue, state, page, running[start : start + PAGE_SIZE], len(running))
    total = inspect.count_pending(r, keys, [queue]).get(queue, {}).get(site, 0)
    jobs = list(itertools.islice(inspect.iter_pending(r, keys, queue, site=site), start, start + PAGE_SIZE))
    return JobPage(site, queue, registry.QUEUED, page, jobs, total)
