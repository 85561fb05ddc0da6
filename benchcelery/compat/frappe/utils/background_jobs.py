"""``frappe.utils.background_jobs`` of the stand-in: Frappe's functions and signatures, answering from
this bench's queues, failed-job registry and worker heartbeats.

Queue objects are the rq stand-in's (compat/rq.py); workers are WorkerInfo (diagnostics/workers.py:
``name``, ``queues``, ``alive``, ``pid``...). Job ids are v15's ``<site>::<id>``; every lookup also
finds develop's ``<site>||<id>``.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

from benchcelery.bench.config import DEFAULTS
from benchcelery.compat.rq import Queue
from benchcelery.context import local
from benchcelery.errors import SiteNotSpecifiedError
from benchcelery.jobs import enqueue as _jobs
from benchcelery.jobs.enqueue import get_job_status, is_job_enqueued, run_inline
from benchcelery.jobs.later import enqueue_at, enqueue_in
from benchcelery.jobs.retry import RetryBackgroundJobError
from benchcelery.jobs.rqjob import RQJob
from benchcelery.runtime import get_runtime

from .. import enqueue
from .._clients import queue_client

__all__ = [
    "RQ_JOB_FAILURE_TTL",
    "RQ_RESULTS_TTL",
    "RetryBackgroundJobError",
    "create_job_id",
    "enqueue",
    "enqueue_at",
    "enqueue_in",
    "execute_job",
    "generate_qname",
    "get_job",
    "get_job_status",
    "get_jobs",
    "get_queue",
    "get_queue_list",
    "get_queues",
    "get_queues_timeout",
    "get_redis_conn",
    "get_workers",
    "is_job_enqueued",
    "set_niceness",
    "truncate_failed_registry",
    "validate_queue",
]

def get_job(job_id: str) -> RQJob | None:
    """The job with this id (as ``job_id`` was given at enqueue, or a full id in either form)."""
    job = _jobs.get_job(job_id)
    return RQJob.of(job) if job is not None else None


RQ_JOB_FAILURE_TTL = int(DEFAULTS["rq_job_failure_ttl"])
RQ_RESULTS_TTL = int(DEFAULTS["rq_results_ttl"])


def get_queues_timeout() -> dict[str, int]:
    """Queue type -> timeout (s), in the default worker order (short first, then custom queues)."""
    return {name: spec.timeout for name, spec in get_runtime().settings.queues.items()}


def validate_queue(queue: str, default_queue_list: list[str] | None = None) -> None:
    """Raise ValidationError ``Queue should be one of ...`` for an unknown queue type."""
    if default_queue_list is None:
        get_runtime().settings.validate_queue(queue)
    elif queue not in default_queue_list:
        from benchcelery.errors import ValidationError

        raise ValidationError(f"Queue should be one of {', '.join(default_queue_list)}")


def generate_qname(qtype: str | list[str]) -> str:
    """Frappe's namespaced queue name ``<bench_id>:<type>`` (a list is comma-joined first)."""
    if isinstance(qtype, list):
        qtype = ",".join(qtype)
    return f"{get_runtime().settings.bench_id}:{qtype}"


def get_queue_list(queue_list: str | list[str] | None = None, build_queue_name: bool = False) -> list[str]:
    """Every queue type, or the given ones validated; ``build_queue_name`` namespaces them."""
    if queue_list is None:
        queues = list(get_queues_timeout())
    else:
        queues = [queue_list] if isinstance(queue_list, str) else list(queue_list)
        for queue in queues:
            validate_queue(queue)
    return [generate_qname(q) for q in queues] if build_queue_name else queues


def get_queue(qtype: str, is_async: bool = True) -> Queue:
    validate_queue(qtype)
    return Queue(generate_qname(qtype))


def get_queues(connection: Any = None) -> list[Queue]:
    return Queue.all(connection)


def get_redis_conn(username: str | None = None, password: str | None = None) -> Any:
    """The queue Redis (refuses FLUSHALL/FLUSHDB/SWAPDB: it holds every site's jobs)."""
    return queue_client()


def get_workers(queue: str | None = None) -> list[Any]:
    """The live workers (all, or those serving queue type ``queue``)."""
    from benchcelery.diagnostics.workers import read_workers

    rt = get_runtime()
    workers = [w for w in read_workers(rt.redis, rt.keys) if w.alive]
    if queue:
        qtype = Queue(queue).queue_type
        workers = [w for w in workers if qtype in w.queues]
    return workers


def get_jobs(site: str | None = None, queue: str | None = None, key: str = "method") -> dict[str, list[Any]]:
    """``{site: [job.<key>, ...]}`` over waiting and running jobs (of ``site`` / queue ``queue``).
    ``key`` is one of the job's kwargs, else a job field or what enqueue recorded (``method``,
    ``event``, ``job_name``, ``user``...)."""
    from benchcelery.jobs.inspect import decode_message, iter_pending, started_jobs

    rt = get_runtime()
    queues = [Queue(queue).queue_type] if queue else list(rt.settings.queues)
    jobs = [j for q in queues for j in iter_pending(rt.redis, rt.keys, q, site=site)]
    jobs += [j for j in started_jobs(rt.redis, rt.keys, site=site) if j.queue in queues]
    found: dict[str, list[Any]] = {}
    for job in jobs:
        value = job.kwargs.get(key) if key in job.kwargs else getattr(job, key, None)
        if value is None and job.raw is not None:  # what enqueue wrote beside (job_name, user)
            value = decode_message(job.raw).get("headers", {}).get(key)
        found.setdefault(job.site, []).append(value)
    return found


def create_job_id(job_id: str | None = None) -> str:
    """The full id a ``job_id`` gets at enqueue: ``<site>::<job_id>`` (a random one without)."""
    if not local.site:
        raise SiteNotSpecifiedError()
    return f"{local.site}::{job_id or uuid.uuid4()}"


def execute_job(
    site: str,
    method: str,
    event: str | None,
    job_name: str | None,
    kwargs: dict[str, Any],
    user: str | None = None,
    is_async: bool = True,
    retry: int = 0,
) -> Any:
    """Run ``method(**kwargs)`` for ``site`` in this process, with the apps' job hooks around it."""
    saved = (local.site, local.user)
    local.site, local.user = site, user or local.user
    try:
        return run_inline(get_runtime(), site, method if isinstance(method, str) else _name(method), kwargs)
    finally:
        local.site, local.user = saved


def _name(fn: Any) -> str:
    from benchcelery.jobs.methods import method_name

    return method_name(fn)


def truncate_failed_registry(
    job: Any = None, connection: Any = None, type: Any = None, value: Any = None, traceback: Any = None
) -> None:
    """Keep the newest ``rq_failed_jobs_limit`` failed records of each queue (Frappe's default
    on_failure; this bench also caps the registry when it records a failure)."""
    from benchcelery.jobs import registry

    rt = get_runtime()
    limit = rt.settings.number("rq_failed_jobs_limit")
    for queue in rt.settings.queues:
        ids = registry.failed_ids(rt.redis, rt.keys, queue)  # newest first
        if len(ids) > limit:
            registry.remove_failed(rt.redis, rt.keys, queue, ids[limit:])


def set_niceness() -> None:
    """Lower this process's CPU priority by ``background_process_niceness`` (Frappe's default 10)."""
    increment = get_runtime().settings.number("background_process_niceness")
    if increment:
        os.nice(increment)
