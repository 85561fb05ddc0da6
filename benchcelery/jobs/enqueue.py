"""``enqueue()`` with Frappe's semantics, on one Celery message per job.

Bad input (unknown queue, a method outside the installed apps or not importable, arguments that
are not JSON-serialisable, a bad timeout) raises ``ValidationError`` before anything is written.
"""

from __future__ import annotations

import inspect
import logging
import math
import time
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Any

from benchcelery.bench.config import HARD_LIMIT_GRACE, QueueSpec
from benchcelery.bench.keys import EXECUTE_JOB, FRONT_PRIORITY, NORMAL_PRIORITY
from benchcelery.bench.names import clip
from benchcelery.context import local
from benchcelery.errors import SiteNotSpecifiedError, ValidationError
from benchcelery.jobs import registry
from benchcelery.jobs.bulk import kwargs_repr, push, uuid4_text
from benchcelery.jobs.methods import method_name, resolve
from benchcelery.jobs.model import Job
from benchcelery.jobs.ratelimit import RateLimit, limit_of
from benchcelery.jobs.retry import RetrySpec
from benchcelery.jobs.retry import header as retry_policy_header
from benchcelery.runtime import Runtime, get_runtime

logger = logging.getLogger("benchcelery.enqueue")


@dataclass
class _Prepared:
    job: Job
    options: dict[str, Any]
    limit: RateLimit | None = None  # the method's rate_limit decorator (jobs/ratelimit.py)
    shape: Hashable | None = None  # what makes its message the same as others' but for id and arguments


def _rates(prepared: Iterable[_Prepared]) -> dict[str, RateLimit | None]:
    """method -> its decorator's limit, for the push that carries the jobs (jobs/bulk.py)."""
    return {p.job.method: p.limit for p in prepared}


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
    retry: RetrySpec = None,
    **kwargs: Any,
) -> Job | Any | None:
    """Enqueue ``method(**kwargs)`` for the current site (``benchcelery.init(site=...)``), with
    Frappe's ``frappe.enqueue`` signature (v15 and develop).

    ``retry``: retries after a failure (a number, ``Retry(max, interval, ...)`` or a dict of its
    fields; jobs/retry.py); None = the queue's default (``workers.<queue>.retry``).
    Returns the Job; the method's result when run inline (``now=True`` or ``is_async=False``);
    None when ``deduplicate`` found the same ``job_id`` queued or running, and when
    ``enqueue_after_commit`` holds the job until the enclosing job succeeds (outside a job it is
    pushed at once and returned). ``at_front_when_starved`` puts the job at the front when its queue
    already holds more than ``QUEUE_STARVATION_THRESHOLD`` waiting jobs. ``timeout`` 0 or None is the
    queue's timeout.
    Raises ValidationError for bad input (nothing is published then).
    """
    if "async" in kwargs:  # Frappe's legacy spelling of is_async
        is_async = bool(kwargs.pop("async"))
    rt = get_runtime()
    site = _current_site()
    if deduplicate and not job_id:
        raise ValidationError("`job_id` parameter is required for deduplication.")
    prepared = _prepare(
        rt,
        site,
        method,
        queue=queue,
        timeout=timeout,
        event=event,
        job_name=job_name,
        at_front=at_front,
        job_id=job_id,
        on_success=on_success,
        on_failure=on_failure,
        retry=retry,
        kwargs=kwargs,
    )
    if now or not is_async:
        return run_inline(rt, site, prepared.job.method, kwargs)
    if at_front_when_starved and not at_front and _starved(rt, queue):
        prepared.options["priority"] = FRONT_PRIORITY
    held = local.job.get("on_commit") if enqueue_after_commit and local.job else None
    if isinstance(held, list):
        # Inside a job: pushed when the job succeeds, dropped when it fails (Frappe: on commit).
        held.append(lambda: _publish(rt, prepared, job_id, deduplicate))
        return None
    return _publish(rt, prepared, job_id, deduplicate)


QUEUE_STARVATION_THRESHOLD = 16  # Frappe's: more waiting jobs than this and at_front_when_starved jumps ahead


def _starved(rt: Runtime, queue: str) -> bool:
    from benchcelery.jobs.inspect import count_pending

    waiting = sum(count_pending(rt.redis, rt.keys, [queue]).get(queue, {}).values())
    return waiting > QUEUE_STARVATION_THRESHOLD


def _publish(rt: Runtime, prepared: _Prepared, job_id: str | None, deduplicate: bool) -> Job | None:
    if not deduplicate:
        # One round trip: the message, its pending counter and (with a job_id) its status key.
        shapes, rates = [prepared.shape], _rates([prepared])
        push(rt, [prepared.options], EXECUTE_JOB, tracked=bool(job_id), shapes=shapes, rates=rates)
        return prepared.job
    if not _claim(rt, [prepared.job.id], deduplicate)[0]:
        logger.info("Not queueing job %s because it is in queue already", prepared.job.id)
        return None
    try:
        push(rt, [prepared.options], EXECUTE_JOB, rates=_rates([prepared]))
    except BaseException:
        rt.redis.delete(rt.keys.job_status(prepared.job.id))
        raise
    return prepared.job


# Names a job's keyword arguments may not use: enqueue's own parameters (from the command line's
# --kwargs they would change how the job is enqueued: `now` ran it in the CLI) and the names
# execute_job and Celery bind themselves.
RESERVED_KWARGS = frozenset({*inspect.signature(enqueue).parameters, "async", "task", "self", "args"} - {"kwargs"})


def check_kwargs(kwargs: dict[str, Any], what: str = "Job argument") -> None:
    """Raise ValidationError when a key of ``kwargs`` is one of enqueue's own names (or not a string)."""
    for key in kwargs:
        if not isinstance(key, str):
            raise ValidationError(f"{what} names must be strings, got {clip(repr(key))}")
        if key in RESERVED_KWARGS:
            raise ValidationError(
                f"{what} {key!r} clashes with enqueue's own parameter of that name "
                f"(reserved: {', '.join(sorted(RESERVED_KWARGS))}); rename the job's argument"
            )


def enqueue_many(jobs: Iterable[dict[str, Any]]) -> list[Job]:
    """Enqueue many jobs in pipelined batches (jobs/bulk.py); each item holds ``enqueue``'s arguments.

    Every item is validated and built before the first message is published (all or nothing on bad
    input).
    ``job_id``/``deduplicate``/``now`` are not supported here (use ``enqueue``).
    """
    rt = get_runtime()
    site = _current_site()
    prepared = []
    for item in jobs:
        item = dict(item)
        if {"job_id", "deduplicate", "now"} & item.keys():
            raise ValidationError("enqueue_many does not take job_id, deduplicate or now")
        method = item.pop("method")
        args = {k: item.pop(k, None) for k in ("queue", "timeout", "event", "job_name", "at_front", "retry")}
        kwargs = item.pop("kwargs", None) or item
        prepared.append(
            _prepare(
                rt,
                site,
                method,
                queue=args["queue"] or "default",
                timeout=args["timeout"],
                event=args["event"],
                job_name=args["job_name"],
                at_front=bool(args["at_front"]),
                retry=args["retry"],
                kwargs=kwargs,
            )
        )
    push(rt, [p.options for p in prepared], EXECUTE_JOB, rates=_rates(prepared))
    return [p.job for p in prepared]


def enqueue_unique_many(items: list[dict[str, Any]]) -> list[Job | None]:
    """Enqueue jobs that each carry a ``job_id`` with ``deduplicate`` semantics, in batches.

    Each item: ``site``, ``method``, ``queue``, ``event``, ``job_id``. Returns, per item, the Job, or
    None when a job with that id is still queued or running. Used by the scheduler, whose due runs
    come many at a time; the items must have been validated (a bad one raises ValidationError).
    """
    rt = get_runtime()
    prepared = [
        _prepare(rt, i["site"], i["method"], queue=i["queue"], event=i.get("event"), job_id=i["job_id"], kwargs={})
        for i in items
    ]
    claimed = _claim(rt, [p.job.id for p in prepared], deduplicate=True)
    to_push = [p for p, ok in zip(prepared, claimed, strict=True) if ok]
    try:
        push(rt, [p.options for p in to_push], EXECUTE_JOB, rates=_rates(to_push))
    except BaseException:
        rt.redis.delete(*[rt.keys.job_status(p.job.id) for p in to_push] or ["-"])
        raise
    return [p.job if ok else None for p, ok in zip(prepared, claimed, strict=True)]


def _claim(rt: Runtime, job_ids: list[str], deduplicate: bool) -> list[bool]:
    """Mark jobs with explicit ids "queued" (one pipeline). With ``deduplicate``, an id whose job is
    still queued or started is not claimed (False); a finished, failed or unknown one is."""
    keys = [rt.keys.job_status(i) for i in job_ids]
    ttl = rt.settings.number("rq_job_failure_ttl")
    pipe = rt.redis.pipeline(transaction=False)
    for key in keys:
        pipe.set(key, registry.QUEUED, nx=True, ex=ttl)
    claimed = [bool(ok) for ok in pipe.execute()]
    taken = [i for i, ok in enumerate(claimed) if not ok]
    current = rt.redis.mget([keys[i] for i in taken]) if taken and deduplicate else [None] * len(taken)
    for i, value in zip(taken, current, strict=True):
        if value is None or value.decode() not in registry.WAITING:
            rt.redis.set(keys[i], registry.QUEUED, ex=ttl)
            claimed[i] = True
    return claimed


def _current_site() -> str:
    if not local.site:
        raise SiteNotSpecifiedError()
    return local.site


@dataclass(frozen=True, slots=True)
class _Plan:
    """What ``_prepare`` works out for a method, site, queue and options, the same for each of their
    jobs: the checks' outcome (while apps.txt, the allowlist and the queue's spec are unchanged),
    and the message's options and headers but for the job's id, arguments and enqueue time."""

    apps: tuple[str, ...]
    allowed: list[str]
    spec: QueueSpec
    name: str
    seconds: int
    limit: RateLimit | None
    priority: int
    headers: dict[str, Any]  # in the message's order; enqueued_at and kwargsrepr set per job
    shape: Hashable | None


MAX_PLANS = 1024
# (site, method, queue, timeout, event, job_name, at_front, user) -> its plan, for the common case
# (a method named by a string; no job_id, callbacks or retry); checked again for every job
_plans: dict[tuple[Any, ...], _Plan] = {}


def _prepare(
    rt: Runtime,
    site: str,
    method: str | Callable[..., Any],
    *,
    queue: str = "default",
    timeout: float | None = None,
    event: str | None = None,
    job_name: str | None = None,
    at_front: bool = False,
    job_id: str | None = None,
    on_success: str | Callable[..., Any] | None = None,
    on_failure: str | Callable[..., Any] | None = None,
    retry: RetrySpec = None,
    kwargs: dict[str, Any],
) -> _Prepared:
    """Validate one job and build its ``apply_async`` options; raises ValidationError."""
    spec = rt.settings.validate_queue(queue)
    if kwargs:
        check_kwargs(kwargs)
    apps, allowed = rt.app_names(), rt.allowed_methods()
    key: tuple[Any, ...] | None = None
    plan = None
    user = local.user
    if (
        job_id is None
        and on_success is None
        and on_failure is None
        and retry is None
        and type(method) is str
        and type(timeout) in _PLAIN_TIMEOUTS
        and type(event) in _PLAIN_TEXT
        and type(job_name) in _PLAIN_TEXT
        and type(user) in _PLAIN_TEXT
    ):
        # Types are part of the key: 1 == 1.0 == True, but they are different arguments.
        key = (site, method, queue, timeout, type(timeout), event, job_name, bool(at_front), user)
        plan = _plans.get(key)
        if plan is not None and (plan.spec is not spec or plan.apps is not apps or plan.allowed != allowed):
            plan = None  # apps.txt, the allowlist or the queue changed: every check again
    if plan is None:
        plan = _plan(spec, site, method, queue, timeout, event, job_name, at_front, job_id,
                     on_success, on_failure, retry, apps, allowed)  # fmt: skip
        if key is not None:
            if len(_plans) >= MAX_PLANS:
                _plans.clear()
            _plans[key] = plan
    name, seconds = plan.name, plan.seconds
    full_id = f"{site}::{job_id or uuid4_text()}"
    now = time.time()
    headers = plan.headers.copy()  # keeps the order
    headers["enqueued_at"] = now
    headers["kwargsrepr"] = kwargs_repr(kwargs) if kwargs else "{}"
    job = Job(
        id=full_id,
        site=site,
        queue=queue,
        method=name,
        state=registry.QUEUED,
        kwargs=kwargs,
        timeout=seconds,
        event=event,
        enqueued_at=now,
    )
    options = {
        "kwargs": kwargs,
        "task_id": full_id,
        "queue": queue,
        "routing_key": queue,
        "priority": plan.priority,
        "headers": headers,
        "shadow": name,
        "soft_time_limit": seconds,
        "time_limit": seconds + HARD_LIMIT_GRACE,
    }
    return _Prepared(job, options, plan.limit, plan.shape)


_PLAIN_TIMEOUTS = frozenset({type(None), int, float})
_PLAIN_TEXT = frozenset({type(None), str})


def _plan(
    spec: QueueSpec,
    site: str,
    method: str | Callable[..., Any],
    queue: str,
    timeout: float | None,
    event: str | None,
    job_name: str | None,
    at_front: bool,
    job_id: str | None,
    on_success: str | Callable[..., Any] | None,
    on_failure: str | Callable[..., Any] | None,
    retry: RetrySpec,
    apps: tuple[str, ...],
    allowed: list[str],
) -> _Plan:
    """Every check of a job but its arguments' (the method, callbacks, job_id, timeout, retry)."""
    name = method_name(method)
    limit = limit_of(resolve(name, apps, allowed))
    callbacks = {}
    if on_success is not None or on_failure is not None:
        for label, cb in (("on_success", on_success), ("on_failure", on_failure)):
            if cb is not None:
                cb_name = method_name(cb)
                resolve(cb_name, apps, allowed)
                callbacks[label] = cb_name
    if job_id is not None and (not isinstance(job_id, str) or not job_id.strip()):
        raise ValidationError("job_id must be a non-empty string")
    seconds = job_timeout(timeout, spec.timeout)
    headers: dict[str, Any] = {
        "site": site,
        "method": name,
        "event": event,
        "user": local.user or "Administrator",
        "job_name": job_name or name,
        "enqueued_at": None,  # per job
        # Jobs take keyword arguments only; Celery tools (Flower's "args") show site and queue here.
        "argsrepr": f"(site={site!r}, queue={queue!r})",
        "kwargsrepr": None,  # per job
        **callbacks,
    }
    if job_id:
        headers["tracked"] = True
    retry_header = retry_policy_header(retry)
    if retry_header is not None:
        headers["retry"] = retry_header
    priority = FRONT_PRIORITY if at_front else NORMAL_PRIORITY
    shape = None
    user, shown_name = headers["user"], headers["job_name"]
    plain = type(user) is str and type(shown_name) is str and (event is None or type(event) is str)
    if plain and not callbacks and retry_header is None:
        # Everything in the message but the id, arguments and time (message.py); types too (1 == 1.0).
        shape = (site, name, queue, priority, seconds, type(seconds), event, user, shown_name, bool(job_id))
    return _Plan(apps, allowed, spec, name, seconds, limit, priority, headers, shape)


def job_timeout(timeout: Any, default: int) -> int:
    """Whole seconds for a ``timeout`` argument: 0 or None is the queue's ``default`` (Frappe's
    rule); a fraction is rounded up. Raises ValidationError for anything else."""
    if timeout is None or (timeout == 0 and not isinstance(timeout, bool)):
        return default
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout < 10**9:
        raise ValidationError(f"timeout must be a positive number of seconds, got {clip(repr(timeout))}")
    return math.ceil(timeout)


def run_inline(rt: Runtime, site: str, name: str, kwargs: dict[str, Any]) -> Any:
    """Run a job in this process now (``now=True``), with the job hooks around it."""
    from benchcelery.jobs.hooks import call_hook, job_hooks

    fn = resolve(name, rt.apps(), rt.allowed_methods())
    apps = rt.apps()
    result = None
    for hook in job_hooks(apps, "before_job"):
        call_hook(hook, method=name, kwargs=kwargs, transaction_type="job")
    try:
        result = fn(**kwargs)
        return result
    finally:
        for hook in job_hooks(apps, "after_job"):
            call_hook(hook, method=name, kwargs=kwargs, result=result)


def get_job_status(job_id: str) -> str | None:
    """queued / started / finished / failed for a job id of the current site, or None."""
    job = get_job(job_id)
    return job.status if job else None


def is_job_enqueued(job_id: str) -> bool:
    return get_job_status(job_id) in registry.WAITING


def get_job(job_id: str) -> Job | None:
    """The job with this id, or None: the ``job_id`` given at enqueue (it may contain ``::``), or a
    full id in either of Frappe's forms (``<site>::<id>``, develop's ``<site>||<id>``)."""
    from benchcelery.jobs.inspect import find_job
    from benchcelery.jobs.model import job_id_candidates

    rt = get_runtime()
    for full_id in job_id_candidates(job_id, local.site):
        job = find_job(rt, full_id)
        if job is not None:
            return job
    if not local.site and not job_id_candidates(job_id, None):
        raise SiteNotSpecifiedError()
    return None
