"""``jobs list``: jobs of some sites in the given states, read from Redis."""

from __future__ import annotations

from typing import TYPE_CHECKING

from benchcelery.bench.keys import UNKNOWN_SITE
from benchcelery.jobs import inspect, registry
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
    if registry.FAILED in states and len(out) < limit:
        stray = [] if queues else [q for q in registry.failed_queue_names(r, keys) if q not in queue_list]
        for q in queue_list + stray:
            ids = registry.failed_ids(r, keys, q, site=only)
            for rec in registry.failed_records(r, keys, q, ids[: limit - len(out)]):
                job = inspect.failed_info(rec)
                if q in stray:
                    job.queue, job.extra["unconfigured_queue"] = q, True
                    out.append(job)
                elif keep(job):
                    out.append(job)
    return out[:limit]
