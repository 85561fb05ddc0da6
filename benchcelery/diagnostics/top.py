"""What `bench jobs top` shows, read with the functions behind show-pending-jobs and the dashboard
(no Celery import): per (site, queue) waiting, running, failed and the oldest waiting job's age;
live workers with their current jobs; done/failed per minute from the job history."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from benchcelery.diagnostics import history
from benchcelery.diagnostics.oldest import oldest_ages
from benchcelery.diagnostics.workers import read_workers
from benchcelery.jobs import inspect, registry
from benchcelery.runtime import Runtime

MINUTES = 15  # throughput history shown


@dataclass
class Row:
    site: str
    queue: str
    waiting: int = 0
    running: int = 0
    failed: int = 0
    oldest: float | None = None  # s


@dataclass
class WorkerRow:
    name: str
    queues: list[str]
    jobs: list[tuple[str, float | None]]  # (method, seconds running)


@dataclass
class TopFrame:
    bench_id: str
    taken_at: float
    rows: list[Row]
    workers: list[WorkerRow]
    minutes: list[dict[str, Any]] = field(default_factory=list)  # oldest first: minute, done, failed, ...

    @property
    def totals(self) -> Row:
        return Row(
            "all",
            "",
            sum(r.waiting for r in self.rows),
            sum(r.running for r in self.rows),
            sum(r.failed for r in self.rows),
            max((r.oldest for r in self.rows if r.oldest is not None), default=None),
        )


def snapshot(rt: Runtime, now: float | None = None) -> TopFrame:
    """One frame (about eight round trips)."""
    at = time.time() if now is None else now
    r, keys = rt.redis, rt.keys
    queues = list(rt.settings.queues)
    pending = inspect.count_pending(r, keys, queues)
    running = inspect.started_jobs(r, keys)
    started: dict[str, dict[str, int]] = {}
    for job in running:
        per_site = started.setdefault(job.queue, {})
        per_site[job.site] = per_site.get(job.site, 0) + 1
    failed = registry.failed_counts(r, keys, queues)
    ages = oldest_ages(r, keys, queues, pending)
    rows = []
    for q in queues:
        sites = set(pending.get(q, {})) | set(started.get(q, {})) | set(failed.get(q, {}))
        for site in sorted(sites):
            oldest = ages.get(q, {}).get(site)
            row = Row(
                site,
                q,
                pending.get(q, {}).get(site, 0),
                started.get(q, {}).get(site, 0),
                failed.get(q, {}).get(site, 0),
                oldest.seconds if oldest is not None and pending.get(q, {}).get(site) else None,
            )
            if row.waiting or row.running or row.failed:
                rows.append(row)
    workers = []
    for w in read_workers(r, keys):
        if not w.alive:
            continue
        jobs = [
            (j.method, at - j.started_at if j.started_at else None)
            for j in running
            if (j.extra or {}).get("worker") == w.name
        ]
        workers.append(WorkerRow(w.name, list(w.queues), jobs))
    minutes = [m.as_dict() for m in history.last_minutes(r, keys, MINUTES, now=at)]
    rows.sort(key=lambda row: (-(row.oldest or 0), row.site, row.queue))
    return TopFrame(rt.settings.bench_id, at, rows, workers, minutes)
