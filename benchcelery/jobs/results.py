"""What rq keeps on a job beyond its status: the return value (with the end time) for
``rq_results_ttl`` seconds, and the ``meta`` dict an app saves with ``job.save_meta()``.

A result is stored for a job that returned something, or that was enqueued with a ``job_id``; a job
without either leaves no trace once it has finished (as before: no write on the hot path). A value
that is not JSON is kept as its ``repr``.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from benchcelery.runtime import Runtime

logger = logging.getLogger(__name__)


def store_result(rt: Runtime, job_id: str, result: Any) -> None:
    """Keep ``result`` and the end time of a job that succeeded; never raises (the job succeeded)."""
    record: dict[str, Any] = {"ended_at": time.time()}
    try:
        record["result"] = result
        payload = json.dumps(record)
    except (TypeError, ValueError):
        record["result"] = repr(result)[:4000]
        payload = json.dumps(record)
    try:
        rt.redis.set(rt.keys.job_result(job_id), payload, ex=rt.settings.number("rq_results_ttl"))
    except Exception:
        logger.exception("Could not store the result of job %s", job_id)


def load_result(rt: Runtime, job_id: str) -> dict[str, Any] | None:
    """``{"result": ..., "ended_at": ...}`` of a job that finished within ``rq_results_ttl``, or None."""
    raw = rt.redis.get(rt.keys.job_result(job_id))
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def save_meta(rt: Runtime, job_id: str, meta: dict[str, Any]) -> None:
    """Store a job's ``meta`` (kept as long as failure records: ``rq_job_failure_ttl``)."""
    rt.redis.set(rt.keys.job_meta(job_id), json.dumps(meta, default=str), ex=rt.settings.number("rq_job_failure_ttl"))


def load_meta(rt: Runtime, job_id: str) -> dict[str, Any]:
    raw = rt.redis.get(rt.keys.job_meta(job_id))
    try:
        value = json.loads(raw) if raw is not None else {}
    except ValueError:
        value = {}
    return value if isinstance(value, dict) else {}
