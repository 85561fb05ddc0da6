"""``show-pending-jobs``: pending / started / failed counts per queue, for some sites or the bench.

Read straight from Redis (no Celery import, no worker broadcast) through ``figures.py``: pending
from the per-site counters (checked against the lists), the oldest waiting job's age from the lists'
oldest ends, started from the in-flight jobs, failed from the failed registry.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from benchcelery.diagnostics.figures import QueueFigures, queue_figures
from benchcelery.jobs import inspect
from benchcelery.jobs.site_pause import paused_sites

if TYPE_CHECKING:
    from benchcelery.runtime import Runtime


@dataclass
class SiteCounts:
    pending: int = 0
    failed: int = 0
    started: int = 0
    oldest_age: float | None = None  # seconds the site's oldest waiting job has waited


@dataclass
class QueueCounts:
    name: str
    pending: int = 0
    failed: int = 0
    started: int = 0
    oldest_age: float | None = None  # seconds the oldest waiting job (of the selected sites) has waited
    sites: dict[str, SiteCounts] | None = None  # --site all: per-site breakdown
    scheduled: int = 0  # delayed: run later, or a retry's next attempt (jobs/later.py)
    paused: bool = False  # bench queue pause
    paused_sites: list[str] = field(default_factory=list)  # selected sites whose jobs on it are paused


@dataclass
class PendingReport:
    sites: list[str] | None  # None = the whole bench
    queues: list[QueueCounts]
    jobs: list[dict[str, Any]] = field(default_factory=list)  # with --verbose: each pending job
    running: list[dict[str, Any]] = field(default_factory=list)  # with --verbose: each running job

    @property
    def total_pending(self) -> int:
        return sum(q.pending for q in self.queues)

    @property
    def total_failed(self) -> int:
        return sum(q.failed for q in self.queues)

    @property
    def total_started(self) -> int:
        return sum(q.started for q in self.queues)

    def as_dict(self) -> dict[str, Any]:
        return {
            "sites": self.sites,
            "queues": [
                {k: v for k, v in asdict(q).items() if not ((k == "sites" and v is None) or (k in _OMIT and not v))}
                for q in self.queues
            ],
            "total": {"pending": self.total_pending, "failed": self.total_failed, "processing": self.total_started},
            **({"jobs": self.jobs} if self.jobs else {}),
            **({"running": self.running} if self.running else {}),
        }


_OMIT = ("paused_sites",)  # shown in JSON only when set


def _sum(per_site: dict[str, int], sites: list[str] | None) -> int:
    if sites is None:
        return sum(per_site.values())
    return sum(per_site.get(s, 0) for s in sites)


def _oldest(fig: QueueFigures, sites: list[str]) -> float | None:
    ages = [a for a in (fig.oldest_age(s) for s in sites if fig.pending.get(s)) if a is not None]
    return max(ages) if ages else None


def pending_report(rt: Runtime, sites: list[str] | None, verbose: bool = False) -> PendingReport:
    """Counts for ``sites`` (None = every job of the bench, whatever its site, with a per-site breakdown)."""
    queues = list(rt.settings.queues)
    report = PendingReport(sites=sites, queues=[])
    paused = paused_sites(rt.redis, rt.keys, queues)
    for fig in queue_figures(rt):
        counts = QueueCounts(
            name=fig.queue,
            pending=_sum(fig.pending, sites),
            failed=_sum(fig.failed, sites),
            started=_sum(fig.started, sites),
            oldest_age=fig.oldest_age() if sites is None else _oldest(fig, sites),
            paused_sites=sorted(s for s in paused.get(fig.queue, {}) if sites is None or s in sites),
        )
        if sites is None:
            counts.sites = {
                s: SiteCounts(fig.pending.get(s, 0), fig.failed.get(s, 0), fig.started.get(s, 0), fig.oldest_age(s))
                for s in fig.sites
            }
        report.queues.append(counts)
    _lifecycle(rt, report, sites)
    if verbose:
        report.jobs, report.running = _verbose_jobs(rt, sites, queues)
    return report


def _lifecycle(rt: Runtime, report: PendingReport, sites: list[str] | None) -> None:
    """Add each queue's delayed jobs (of ``sites``) and whether it is paused."""
    from benchcelery.jobs.scheduled import counts

    scheduled = counts(rt, [q.name for q in report.queues])
    paused = {q.decode() for q in rt.redis.smembers(rt.keys.paused)}
    for q in report.queues:
        q.scheduled = _sum(scheduled.get(q.name, {}), sites)
        q.paused = q.name in paused


def _verbose_jobs(
    rt: Runtime, sites: list[str] | None, queues: list[str]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(waiting jobs in the order workers take them, running jobs oldest first) of ``sites``."""
    r, keys = rt.redis, rt.keys
    now = time.time()
    only = sites[0] if sites and len(sites) == 1 else None
    wanted = set(sites) if sites is not None else None
    waiting = []
    for q in queues:
        for job in inspect.iter_pending(r, keys, q, site=only):
            if wanted is not None and job.site not in wanted:
                continue
            waiting.append(
                {
                    "id": job.id,
                    "queue": q,
                    "position": job.position,
                    "method": job.method,
                    "kwargs": job.kwargs,
                    "event": job.event,
                    "age": round(now - job.enqueued_at, 1) if job.enqueued_at else None,
                }
            )
    running = [
        {
            "id": job.id,
            "queue": job.queue,
            "method": job.method,
            "kwargs": job.kwargs,
            "event": job.event,
            "worker": job.extra.get("worker"),
            "running_for": round(now - job.started_at, 1) if job.started_at else None,
        }
        for job in inspect.started_jobs(r, keys, site=only)
        if wanted is None or job.site in wanted
    ]
    return waiting, running


def _site_rows(q: QueueCounts) -> list[str]:
    """--site all: the queue's counts per site, as rows under its totals."""
    if not q.sites:
        return []
    rows = [("SITE", "PENDING", "FAILED", "STARTED")]
    rows += [(site, str(c.pending), str(c.failed), str(c.started)) for site, c in q.sites.items()]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return ["    " + "  ".join([*(c.ljust(w) for c, w in zip(row, widths, strict=False)), row[3]]) for row in rows]


def _job_lines(running: list[dict[str, Any]], waiting: list[dict[str, Any]]) -> list[str]:
    lines = []
    for job in running:
        since = f"for {job['running_for']:.0f}s" if job["running_for"] is not None else "since an unknown time"
        worker = f" on {job['worker']}" if job.get("worker") else ""
        lines.append(f"    running {job['id']} {job['method']} {job['kwargs']} ({since}{worker})")
    for job in waiting:
        age = f"{job['age']:.0f}s ago" if job["age"] is not None else "age unknown"
        lines.append(f"    #{job['position']} {job['id']} {job['method']} {job['kwargs']} ({age})")
    return lines


def render_text(report: PendingReport) -> str:
    """The guide's block, exactly (plus ``scheduled`` when jobs wait to run later and "(paused)" after
    a paused queue's name); for the whole bench (--site all) each queue's counts are followed
    by a row per site; with --verbose, by its running jobs, then its waiting ones (next first)."""
    lines: list[str] = []
    waiting: dict[str, list[dict[str, Any]]] = {}
    running: dict[str, list[dict[str, Any]]] = {}
    for job in report.jobs:
        waiting.setdefault(job["queue"], []).append(job)
    for job in report.running:
        running.setdefault(job["queue"], []).append(job)
    for q in report.queues:
        lines += [
            f"Queue: {q.name}" + (" (paused)" if q.paused else ""),
            f"  - pending: {q.pending}",
            f"  - failed: {q.failed}",
            f"  - started: {q.started}",
        ]
        if q.scheduled:  # run later, or waiting for a retry
            lines.append(f"  - scheduled: {q.scheduled}")
        lines += [f"  - paused: {site} (bench --site {site} queue resume {q.name})" for site in q.paused_sites]
        lines += _site_rows(q)
        lines += _job_lines(running.get(q.name, []), waiting.get(q.name, []))
        lines.append("")
    lines += [
        f"Total pending: {report.total_pending}",
        f"Total failed: {report.total_failed}",
        f"Total processing: {report.total_started}",
    ]
    return "\n".join(lines)
