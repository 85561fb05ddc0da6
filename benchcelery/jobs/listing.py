"""``jobs list``: jobs of some sites in the given states, read from Redis."""

from __future__ import annotations

from typing import TYPE_CHECKING

from benchcelery.bench.keys import UNKNOWN_SITE
from benchcelery.jobs import inspect, registry, scheduled
from benchcelery.jobs.model import Job

if TYPE_CHECKING:
    from benchcelery.runtime import Runtime


def list_jobs(
    rt: Runtime, sites: list[str] | None, states: list[str], queues: list[str] | None, limit: int
) -> list[Job]:
    """Running jobs first (oldest first), then waiting ones (next first), then failures (newest first).

    Queue elements that are not valid messages and jobs of sites that do not exist (and their
    failure records) belong to no site of the bench: they are listed whatever sites are asked for,
    so nobody has to look for them. Without ``queues``, failures recorded under a queue no config
    names (a forged message's routing key) are listed too, with ``extra["unconfigured_queue"]``."""
    r, keys = rt.redis, rt.keys
    queue_list = queues or list(rt.settings.queues)
    wanted = {*sites, UNKNOWN_SITE} if sites is not None else None
    only = None
    out: list[Job] = []

    def keep(job: Job) -> bool:
        return (wanted is None or job.site in wanted or not rt.bench.site_exists(job.site)) and job.queue in queue_list

    if registry.STARTED in states:
        out += [j for j in inspect.started_jobs(r, keys, site=only) if keep(j)][: limit - len(out)]
    if registry.QUEUED in states:
        for q in queue_list:
            for job in inspect.iter_pending(r, keys, q, site=only):
                if len(out) >= limit:
                    break
                if keep(job):
                    out.append(job)
    for kind in (registry.RETRYING, registry.SCHEDULED):  # soonest due first
        if kind in states and len(out) < limit:
            out += [_delayed(row) for row in scheduled.delayed_jobs(rt, kind, limit=10**9) if keep(_delayed(row))][
                : limit - len(out)
            ]
    if registry.FAILED in states and len(out) < limit:
        stray = [] if queues else [q for q in registry.failed_queue_names(r, keys) if q not in queue_list]
        out += _failed_newest_first(rt, queue_list + stray, wanted, limit - len(out), stray)
    return out[:limit]


def _delayed(row: scheduled.DelayedJob) -> Job:
    return Job(
        id=row.job_id, site=row.site, queue=row.queue, method=row.method, state=row.kind,
        extra={"due": row.due, "attempts": row.attempts},
    )  # fmt: skip


def _failed_newest_first(
    rt: Runtime, queues: list[str], wanted: set[str] | None, limit: int, unconfigured: list[str]
) -> list[Job]:
    """Up to ``limit`` failed jobs of ``queues``, newest failure first whatever their queue; only
    ``wanted`` sites' (None = all) and those of sites that do not exist. Records of a queue in
    ``unconfigured`` (one no config names: a forged message's) are flagged."""
    exists: dict[str, bool] = {}

    def belongs(site: str) -> bool:
        if wanted is None or site in wanted:
            return True
        if site not in exists:
            exists[site] = rt.bench.site_exists(site)
        return not exists[site]

    chosen = [
        (q, job_id)
        for _, q, job_id in registry.failed_entries(rt.redis, rt.keys, queues)
        if belongs(registry.site_of(job_id))
    ][:limit]
    by_queue: dict[str, list[str]] = {}
    for q, job_id in chosen:
        by_queue.setdefault(q, []).append(job_id)
    found = {
        (q, rec["job_id"]): inspect.failed_info(rec)
        for q, ids in by_queue.items()
        for rec in registry.failed_records(rt.redis, rt.keys, q, ids)
    }
    jobs = [found[key] for key in chosen if key in found]
    for (q, _), job in zip([key for key in chosen if key in found], jobs, strict=True):
        if q in unconfigured:
            job.queue, job.extra["unconfigured_queue"] = q, True
    return jobs
