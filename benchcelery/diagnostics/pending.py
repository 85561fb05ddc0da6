"""``show-pending-jobs``: pending / started / failed counts per queue, for some sites or the bench.

Read straight from Redis (no Celery import, no worker broadcast): pending from the queue lists
(a Lua tally, exact), started from kombu's ``unacked`` hash, failed from the failed registry.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from benchcelery.jobs import inspect, registry

if TYPE_CHECKING:
    from benchcelery.runtime import Runtime


@dataclass
class QueueCounts:
    name: str
    pending: int = 0
    failed: int = 0
    started: int = 0


@dataclass
class PendingReport:
    sites: list[str] | None  # None = the whole bench
    queues: list[QueueCounts]
    jobs: list[dict[str, Any]] = field(default_factory=list)  # with --verbose: each pending job

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
            "queues": [asdict(q) for q in self.queues],
            "total": {"pending": self.total_pending, "failed": self.total_failed, "processing": self.total_started},
            **({"jobs": self.jobs} if self.jobs else {}),
        }


def _sum(per_site: dict[str, int], sites: list[str] | None) -> int:
    if sites is None:
        return sum(per_site.values())
    return sum(per_site.get(s, 0) for s in sites)


def pending_report(rt: Runtime, sites: list[str] | None, verbose: bool = False) -> PendingReport:
    """Counts for ``sites`` (None = every job of the bench, whatever its site)."""
    r, keys = rt.redis, rt.keys
    queues = list(rt.settings.queues)
    only = sites[0] if sites and len(sites) == 1 else None
    pending = inspect.count_pending(r, keys, queues, site=only)
    started = inspect.started_counts(r, keys)
    failed = registry.failed_counts(r, keys, queues)
    report = PendingReport(
        sites=sites,
        queues=[
            QueueCounts(
                name=q,
                pending=_sum(pending.get(q, {}), sites),
                failed=_sum(failed.get(q, {}), sites),
                started=_sum(started.get(q, {}), sites),
            )
            for q in queues
        ],
    )
    if verbose:
        now = time.time()
        wanted = set(sites) if sites is not None else None
        for q in queues:
            for job in inspect.iter_pending(r, keys, q, site=only):
                if wanted is not None and job.site not in wanted:
                    continue
                report.jobs.append(
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
    return report


def render_text(report: PendingReport) -> str:
    """The guide's block, exactly; with --verbose the pending jobs follow each queue's counts."""
    lines: list[str] = []
    by_queue: dict[str, list[dict[str, Any]]] = {}
    for job in report.jobs:
        by_queue.setdefault(job["queue"], []).append(job)
    for q in report.queues:
        lines += [
            f"Queue: {q.name}",
            f"  - pending: {q.pending}",
            f"  - failed: {q.failed}",
            f"  - started: {q.started}",
        ]
        for job in by_queue.get(q.name, []):
            age = f"{job['age']:.0f}s ago" if job["age"] is not None else "age unknown"
            lines.append(f"    #{job['position']} {job['id']} {job['method']} {job['kwargs']} ({age})")
        lines.append("")
    lines += [
        f"Total pending: {report.total_pending}",
        f"Total failed: {report.total_failed}",
        f"Total processing: {report.total_started}",
    ]
    return "\n".join(lines)
