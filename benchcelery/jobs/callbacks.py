"""A job's ``on_success`` / ``on_failure`` callbacks, called with rq's signatures (Frappe passes them
through to rq)::

    on_success(job, connection, result, *args, **kwargs)
    on_failure(job, connection, type, value, traceback)

``job`` is the finished job (jobs/rqjob.py: ``id``, ``kwargs``, ``get_status()`` ...),
``connection`` the queue Redis. A callback taking exactly two positional parameters is called the
older way, ``callback(meta, value)`` (the job's description as a dict, then the result or the
exception). A callback that raises is logged; the job's outcome stands.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

from benchcelery.jobs import registry
from benchcelery.jobs.methods import resolve
from benchcelery.jobs.rqjob import RQJob
from benchcelery.runtime import Runtime

logger = logging.getLogger("benchcelery.job")


def finished_job(meta: dict[str, Any], kwargs: dict[str, Any], state: str) -> RQJob:
    """The job a callback receives, built from the running job's description."""
    return RQJob(
        id=meta["job_id"],
        site=meta.get("site") or registry.site_of(meta["job_id"]),
        queue=meta.get("queue") or "default",
        method=meta.get("method") or "",
        state=state,
        kwargs=kwargs,
        event=meta.get("event"),
        timeout=meta.get("timeout"),
        enqueued_at=meta.get("enqueued_at"),
        started_at=meta.get("started_at"),
    )


def run_callback(
    rt: Runtime,
    name: str | None,
    meta: dict[str, Any],
    kwargs: dict[str, Any],
    result: Any = None,
    exc: BaseException | None = None,
) -> None:
    """Call the ``on_success`` (``exc`` None) or ``on_failure`` callback named ``name``; never raises."""
    if not name:
        return
    try:
        fn = resolve(name, rt.apps(), rt.allowed_methods())
        if _older_style(fn):
            fn(meta, exc if exc is not None else result)
        elif exc is None:
            fn(finished_job(meta, kwargs, registry.FINISHED), rt.redis, result)
        else:
            fn(finished_job(meta, kwargs, registry.FAILED), rt.redis, type(exc), exc, exc.__traceback__)
    except Exception:
        logger.exception("Callback %s of job %s failed", name, meta.get("job_id"))


def _older_style(fn: Any) -> bool:
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return False
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) == 2 and not any(p.kind is p.VAR_POSITIONAL for p in params)
