"""The ``frappe`` that Frappe apps' background-job code imports when the real Frappe is not installed
(util/frappe_import.py makes ``import frappe`` find it; an installed Frappe always wins).

It provides Frappe's background-job API over this bench's data, and nothing else:

- ``frappe.enqueue`` (Frappe v15/develop signature: jobs/enqueue.py), ``frappe.local`` (``site``,
  ``conf``, ``flags``, ``job``, ``user``), ``frappe.flags``, ``frappe.conf``, ``frappe.session``
  (``user``), ``frappe.get_site_config()``, ``frappe.cache()`` (the cache Redis),
  ``frappe.publish_realtime``, ``frappe.publish_progress``, ``frappe.log_error`` (a record in the
  failed-job registry: ``bench jobs failed``, the dashboard), ``frappe.whitelist`` (a no-op
  decorator), ``frappe.get_traceback``, ``frappe._`` (returns its text), ``frappe.throw`` and
  ``frappe.ValidationError``, ``frappe._dict``;
- ``frappe.utils.background_jobs`` (Frappe's functions and signatures).

Any other name (``frappe.db``, ``frappe.get_doc``...) is an object that raises one clear error when
used, so a module that mentions it still imports.
"""

from __future__ import annotations

import traceback as _traceback
import uuid as _uuid
from collections.abc import Callable
from typing import Any

from benchcelery.context import AttrDict as _dict
from benchcelery.context import local
from benchcelery.errors import ValidationError
from benchcelery.jobs import enqueue as _jobs
from benchcelery.jobs.later import enqueue_at, enqueue_in
from benchcelery.jobs.model import Job
from benchcelery.jobs.retry import RetryBackgroundJobError
from benchcelery.jobs.retry import RetrySpec as _RetrySpec
from benchcelery.jobs.rqjob import RQJob

from ._clients import cache_client as _cache_client
from ._unavailable import FrappeUnavailableError, module_getattr

# util/frappe_import.py's stub submodules (frappe.model...) answer their names with this.
submodule_getattr = module_getattr

IS_BENCHCELERY_STAND_IN = True

__all__ = [
    "FrappeUnavailableError",
    "RetryBackgroundJobError",
    "ValidationError",
    "_",
    "_dict",
    "cache",
    "enqueue",
    "enqueue_at",
    "enqueue_in",
    "get_site_config",
    "get_traceback",
    "local",
    "log_error",
    "publish_progress",
    "publish_realtime",
    "throw",
    "whitelist",
]


def __getattr__(name: str) -> Any:
    # Frappe's module-level proxies of the current job's context (per thread, per job).
    if name == "flags":
        return local.flags
    if name == "conf":
        return _dict(local.conf or {})
    if name == "session":
        return _dict(user=local.user or "Administrator")
    return module_getattr("frappe", name)


def enqueue(
    method: str | Callable[..., Any],
    queue: str = "default",
    timeout: float | None = None,
    event: str | None = None,
    is_async: bool = True,
    job_name: str | None = None,
    now: bool = False,
    enqueue_after_commit: bool = False,
    *,
    on_success: str | Callable[..., Any] | None = None,
    on_failure: str | Callable[..., Any] | None = None,
    at_front: bool = False,
    job_id: str | None = None,
    deduplicate: bool = False,
    at_front_when_starved: bool = False,
    retry: _RetrySpec = None,
    **kwargs: Any,
) -> Any:
    """Frappe's ``frappe.enqueue`` (benchcelery.jobs.enqueue.enqueue); a job comes back as an RQJob."""
    result = _jobs.enqueue(
        method,
        queue,
        timeout,
        event,
        is_async,
        job_name,
        now,
        enqueue_after_commit,
        on_success=on_success,
        on_failure=on_failure,
        at_front=at_front,
        job_id=job_id,
        deduplicate=deduplicate,
        at_front_when_starved=at_front_when_starved,
        retry=retry,
        **kwargs,
    )
    inline = now or not is_async or not kwargs.get("async", True)
    return RQJob.of(result) if isinstance(result, Job) and not inline else result


def _(msg: str, lang: str | None = None, context: str | None = None) -> str:
    """Frappe's translation function: returns ``msg`` unchanged (no translations here)."""
    return msg


def throw(msg: str, exc: type[Exception] = ValidationError, title: str | None = None, **_: Any) -> None:
    raise exc(msg)


def whitelist(*args: Any, **kwargs: Any) -> Any:
    """``@frappe.whitelist()`` / ``@frappe.whitelist(allow_guest=True)``: leaves the function as it is
    (there is no web API here)."""
    if len(args) == 1 and callable(args[0]) and not kwargs:
        return args[0]

    def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
        return fn

    return decorator


def cache() -> Any:
    """The cache Redis (config ``redis_cache``), never the queue (see _clients.py)."""
    return _cache_client()


def get_site_config(sites_path: str | None = None, site_path: str | None = None) -> _dict:
    """The current site's merged config (common_site_config.json overlaid by site_config.json); only
    the common config without a site."""
    from benchcelery.runtime import get_runtime

    if local.site and local.conf:
        return _dict(local.conf)
    bench = get_runtime().bench
    return _dict(bench.merged_config(local.site) if local.site else bench.common_config())


def get_traceback(with_context: bool = False) -> str:
    """The traceback of the exception being handled, or ""."""
    text = _traceback.format_exc()
    return "" if text.strip() == "NoneType: None" else text


def publish_realtime(
    event: str | None = None,
    message: Any = None,
    room: str | None = None,
    user: str | None = None,
    doctype: str | None = None,
    docname: str | None = None,
    task_id: str | None = None,
    after_commit: bool = False,
) -> None:
    """Frappe's ``publish_realtime``: to a room of the current site (benchcelery.publish_realtime).
    With ``task_id`` the event (default ``task_progress``) goes to room ``task_progress:<task_id>``."""
    from benchcelery.realtime import publish_realtime as publish
    from benchcelery.realtime.publish import task_room

    if message is None:
        message = {}
    if task_id and not room:
        room, after_commit = task_room(task_id), False
        if isinstance(message, dict):
            message = {**message, "task_id": task_id}
    publish(event or ("task_progress" if task_id else "global"), message, room, user, doctype, docname, after_commit)


def publish_progress(
    percent: float,
    title: str | None = None,
    doctype: str | None = None,
    docname: str | None = None,
    description: str | None = None,
    task_id: str | None = None,
) -> None:
    """Event ``progress`` with ``{percent, title, description}``: to the document's room when
    ``doctype`` and ``docname`` are given, else to the current user's (Frappe's rule)."""
    publish_realtime(
        "progress",
        {"percent": percent, "title": title, "description": description},
        user=None if doctype and docname else (local.user or "Administrator"),
        doctype=doctype,
        docname=docname,
        task_id=task_id,
    )


def log_error(
    title: str | None = None,
    message: str | None = None,
    reference_doctype: str | None = None,
    reference_name: str | None = None,
    *,
    defer_insert: bool = False,
) -> _dict:
    """Frappe's Error Log, kept where an operator sees failures: a record in the failed-job registry
    of the current job's queue (``bench jobs failed``, the dashboard), id ``<site>::error-log::<n>``,
    exception ``Error Log: <title>``, traceback = ``message`` or the exception being handled. Capped
    and expired like failed jobs (``rq_failed_jobs_limit``, ``rq_job_failure_ttl``)."""
    from benchcelery.jobs import registry
    from benchcelery.runtime import get_runtime

    rt = get_runtime()
    job = local.job or {}
    site = local.site or "-"
    text = message or get_traceback() or (title or "")
    heading = title or (text.strip().splitlines() or ["Error"])[-1]
    refs = {"reference_doctype": reference_doctype, "reference_name": reference_name}
    queue = str(job.get("queue") or "default")
    record: dict[str, Any] = {
        "job_id": f"{site}::error-log::{_uuid.uuid4().hex[:12]}",
        "site": site,
        "queue": queue,
        "method": heading,  # Frappe's Error Log "method" is its title; never a job to retry
        "job_name": job.get("method") or heading,  # the job that logged it
        "user": local.user,
        "kwargs": {k: v for k, v in refs.items() if v},
        "exception": f"Error Log: {heading}",
        "traceback": text,
        "error_log": True,
        "started_at": job.get("started_at"),
    }
    registry.record_failure(
        rt.redis,
        rt.keys,
        queue,
        record,
        limit=rt.settings.number("rq_failed_jobs_limit"),
        ttl=rt.settings.number("rq_job_failure_ttl"),
    )
    return _dict(name=record["job_id"], method=heading, error=text)
