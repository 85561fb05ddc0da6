"""What the dashboard shows, read with the functions the CLI uses (no Celery import).

- counts: ``inspect.count_pending`` / ``started_counts`` and ``registry.failed_counts`` — the
  functions behind ``show-pending-jobs`` — taken once and split by site;
- oldest waiting job: ``diagnostics.oldest`` (``oldest_ages`` over ``oldest_waiting``, as metrics and doctor);
- workers: ``diagnostics.workers.read_workers``; running jobs: ``inspect.started_jobs``;
- scheduler: ``scheduler.status.scheduler_status`` per site;
- failed jobs: the ids and scores of the registries (``failed:<queue>``, configured or not), then
  only the records a page shows (or, filtering by method or text, 50 records at a time); list rows
  keep the exception's head only. At most two such reads run at once.
- waiting jobs: when the site's jobs are all the queue holds, LRANGE of exactly the page (a deep
  page costs what a first page does); otherwise ``inspect.iter_pending`` (LRANGE windows of 1,000,
  stopped once the page is full). Pages past the last are the last page.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from benchcelery.diagnostics.oldest import OldestAge, oldest_ages
from benchcelery.diagnostics.workers import WorkerInfo, read_workers
from benchcelery.jobs import inspect, registry
from benchcelery.jobs.model import Job
from benchcelery.jobs.site_pause import paused_sites
from benchcelery.runtime import Runtime

# Health of a queue cell, from the age of its oldest waiting job (s) and whether a live worker serves it.
WARN_AGE = 60
BAD_AGE = 600
PAGE_SIZE = 50
CHUNK = 50  # failed records read per round trip while filtering
SUMMARY_CHARS = 500  # of a failed job's exception shown in a list row
# Requests that read many failed records run two at a time, so parallel requests cannot add up.
_heavy = threading.BoundedSemaphore(2)


@dataclass
class Cell:
    pending: int = 0
    started: int = 0
    failed: int = 0
    oldest: OldestAge | None = None
    health: str = "idle"  # idle / ok / warn / bad
    paused: bool = False  # this site's jobs on this queue are paused (jobs/site_pause.py)


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
                        "paused": c.paused,
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
    paused = paused_sites(r, keys, queues)
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
                paused=site in paused.get(q, {}),
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


def failed_queues(rt: Runtime) -> tuple[list[str], list[str]]:
    """(configured queues, queues no config names that hold failed records)."""
    configured = list(rt.settings.queues)
    stray = [q for q in registry.failed_queue_names(rt.redis, rt.keys) if q not in configured]
    return configured, stray


def _all_failed_queues(rt: Runtime) -> list[str]:
    configured, stray = failed_queues(rt)
    return configured + stray


def _index(rt: Runtime, flt: FailedFilter, queues: list[str]) -> list[tuple[float, str, str]]:
    """(failed_at, queue, id) of every failed record the site filter keeps, newest first: ids and
    scores only, never the records."""
    r, keys = rt.redis, rt.keys
    pipe = r.pipeline(transaction=False)
    for q in queues:
        pipe.zrevrange(keys.failed(q), 0, -1, withscores=True)
    prefix = f"{flt.site}::" if flt.site else ""
    out = [
        (float(score), q, raw.decode("utf-8", "replace"))
        for q, rows in zip(queues, pipe.execute(), strict=True)
        for raw, score in rows
    ]
    out = [row for row in out if row[2].startswith(prefix)]
    out.sort(key=lambda row: row[0], reverse=True)
    return out


def summary(rec: dict[str, Any]) -> Job:
    """A failed record as a list row: the exception's head only (no traceback, kwargs or raw text)."""
    job = inspect.failed_info(rec)
    exc = str(job.extra.get("exception") or "")
    job.kwargs = {}
    job.extra = {
        "exception": exc[:SUMMARY_CHARS],
        "failed_at": job.extra.get("failed_at"),
        "user": job.extra.get("user"),
    }
    return job


def _records(rt: Runtime, rows: list[tuple[float, str, str]]) -> Iterator[dict[str, Any]]:
    """The records of ``rows``, ``CHUNK`` at a time (so a request holds one chunk of them at once)."""
    for i in range(0, len(rows), CHUNK):
        part = rows[i : i + CHUNK]
        pipe = rt.redis.pipeline(transaction=False)
        for _score, q, job_id in part:
            pipe.hget(rt.keys.failed_data(q), job_id)
        for (_score, q, job_id), raw in zip(part, pipe.execute(), strict=True):
            rec = _parse(raw, q, job_id)
            if rec is not None:
                yield rec


def _parse(raw: bytes | None, queue: str, job_id: str) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        rec = json.loads(raw)
    except (ValueError, RecursionError):
        rec = None
    if not isinstance(rec, dict):
        return {"job_id": job_id, "queue": queue, "exception": "[unreadable] failed record"}
    rec.setdefault("job_id", job_id)
    rec["queue"] = queue  # where it is stored, which the actions need
    return rec


def failed_jobs(rt: Runtime, flt: FailedFilter) -> list[Job]:
    """Every failed job matching ``flt`` as list rows (``summary``), newest first."""
    queues = [flt.queue] if flt.queue else _all_failed_queues(rt)
    with _heavy:
        return [summary(rec) for rec in _records(rt, _index(rt, flt, queues)) if flt.matches(inspect.failed_info(rec))]


@dataclass
class FailedPage:
    jobs: list[Job]
    total: int
    page: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // PAGE_SIZE))


def failed_page(rt: Runtime, flt: FailedFilter, page: int) -> FailedPage:
    """One page of the failed jobs matching ``flt``. Without a method or text filter only the page's
    records are read; with one, records are read ``CHUNK`` at a time and only the page's rows kept."""
    queues = [flt.queue] if flt.queue else _all_failed_queues(rt)
    start = (page - 1) * PAGE_SIZE
    with _heavy:
        rows = _index(rt, flt, queues)
        if not flt.method and not flt.text:
            jobs = [summary(rec) for rec in _records(rt, rows[start : start + PAGE_SIZE])]
            return FailedPage(jobs, len(rows), page)
        total, jobs = 0, []
        for rec in _records(rt, rows):
            if flt.matches(inspect.failed_info(rec)):
                if start <= total < start + PAGE_SIZE:
                    jobs.append(summary(rec))
                total += 1
        return FailedPage(jobs, total, page)


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
    page = min(page, max(1, -(-total // PAGE_SIZE)))  # past the end: the last page
    start = (page - 1) * PAGE_SIZE
    lists = inspect.waiting_lists(r, keys, queue, site)
    pipe = r.pipeline(transaction=False)
    for key in lists:
        pipe.llen(key)
    lengths = pipe.execute()
    if sum(lengths) == total:  # only this site's jobs wait here: index the lists directly
        jobs = _window(r, queue, list(zip(lists, lengths, strict=True)), start, PAGE_SIZE)
    else:
        with _heavy:
            jobs = list(itertools.islice(inspect.iter_pending(r, keys, queue, site=site), start, start + PAGE_SIZE))
    return JobPage(site, queue, registry.QUEUED, page, jobs, total)


def _window(r: Any, queue: str, lists: list[tuple[str, int]], start: int, count: int) -> list[Job]:
    """Waiting jobs ``start``..``start+count`` in the order workers take them (each list from its
    tail), with one LRANGE per list the window touches."""
    out: list[Job] = []
    offset = 0  # position of the first element of the current list
    for key, length in lists:
        lo, hi = max(start, offset), min(start + count, offset + length)
        if lo < hi:  # positions lo..hi-1 are list indexes length-1-(p-offset), from the tail
            first, last = length - (hi - offset), length - 1 - (lo - offset)
            raws = r.lrange(key, first, last)
            for i, raw in enumerate(reversed(raws)):
                # the row a list page shows; inspect builds it the same way for iter_pending
                out.append(inspect._queued(inspect.decode_message(raw), queue, raw, key, lo + i))
        offset += length
    return out
