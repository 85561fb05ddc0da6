"""What the dashboard's buttons do: the CLI's own functions, each call logged with its user.

retry / delete / cancel: ``jobs.ops``; scheduler state: ``scheduler.state.apply_action``; trigger
now: ``scheduler.trigger.trigger``. Retrying and triggering enqueue (which builds the Celery app
once, lazily); cancelling a running job revokes it through Celery's remote control.

Every field of an action-log line goes through ``log_text``: control characters (a newline in a
job id) are written as ``\\xNN`` and long values are cut, so a value can never start a line of
its own or impersonate another user's.
"""

from __future__ import annotations

import logging
import re
import threading

from benchcelery.dashboard.data import FailedFilter, failed_jobs
from benchcelery.errors import BenchError, ValidationError
from benchcelery.jobs import ops, registry
from benchcelery.runtime import Runtime

logger = logging.getLogger("benchcelery.dashboard.actions")
# Enqueue sets the thread's site context and builds the Celery app on first use: one action at a time.
_lock = threading.Lock()

SCHEDULER_ACTIONS = ("enable", "disable", "pause", "resume")


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\\]")
LOG_FIELD_MAX = 300


def log_text(value: object) -> str:
    """``value`` as one safe log field: backslashes and control characters escaped, length capped."""
    text = _CONTROL.sub(lambda m: "\\\\" if m.group() == "\\" else f"\\x{ord(m.group()):02x}", str(value))
    return text if len(text) <= LOG_FIELD_MAX else f"{text[:LOG_FIELD_MAX]}...({len(text)} chars)"


def _log(user: str, action: str, target: str, outcome: str) -> None:
    fields = (log_text(v) for v in (user, action, target, outcome))
    logger.info("user=%s action=%s target=%s outcome=%s", *fields)


def retry(rt: Runtime, user: str, job_id: str) -> str:
    with _lock:
        try:
            done = ops.retry_failed(rt, registry.site_of(job_id), job_id)
        except BenchError as exc:
            _log(user, "retry", job_id, f"error: {exc}")
            raise
    _log(user, "retry", job_id, "queued")
    return f"Retried {done}"


def delete(rt: Runtime, user: str, job_id: str) -> str:
    with _lock:
        try:
            state = ops.delete_job(rt, registry.site_of(job_id), job_id)
        except BenchError as exc:
            _log(user, "delete", job_id, f"error: {exc}")
            raise
    _log(user, "delete", job_id, f"deleted {state}")
    return f"Deleted {state} job {job_id}"


def bulk(rt: Runtime, user: str, action: str, flt: FailedFilter) -> str:
    """Retry or delete every failed job matching ``flt``."""
    if action not in ("retry", "delete"):
        raise ValidationError(f"unknown bulk action {action!r}")
    jobs = failed_jobs(rt, flt)
    done, errors = 0, 0
    with _lock:
        if action == "delete":
            by_queue: dict[str, list[str]] = {}
            for job in jobs:
                by_queue.setdefault(job.queue, []).append(job.id)
            done = sum(registry.remove_failed(rt.redis, rt.keys, q, ids) for q, ids in by_queue.items())
        else:
            for job in jobs:
                try:
                    ops.retry_failed(rt, job.site, job.id)
                    done += 1
                except BenchError:
                    errors += 1
    target = " ".join(f"{k}={v}" for k, v in flt.as_query().items()) or "all"
    _log(user, f"{action}-all", target, f"{done} done, {errors} errors")
    verb = "Retried" if action == "retry" else "Deleted"
    return f"{verb} {done} failed job{'s' if done != 1 else ''}" + (
        f" ({errors} could not be retried)" if errors else ""
    )


def cancel(rt: Runtime, user: str, job_id: str, terminate: bool) -> str:
    with _lock:
        try:
            origin = f"dashboard, user {user}"
            what = ops.cancel_job(rt, registry.site_of(job_id), job_id, terminate=terminate, origin=origin)
        except BenchError as exc:
            _log(user, "terminate" if terminate else "cancel", job_id, f"error: {exc}")
            raise
    _log(user, "terminate" if terminate else "cancel", job_id, what)
    return f"Job {job_id} {what}"


def scheduler_action(rt: Runtime, user: str, site: str, action: str) -> str:
    from benchcelery.scheduler.state import ACTION_WORDS, apply_action

    if action not in SCHEDULER_ACTIONS:
        raise ValidationError(f"unknown scheduler action {action!r}")
    rt.bench.require_site(site)
    state = apply_action(rt.bench, site, action)
    _log(user, f"scheduler-{action}", site, state.state)
    note = (
        f" (still inactive: {'; '.join(state.reasons)})" if action in ("enable", "resume") and not state.active else ""
    )
    return f"Scheduler is {ACTION_WORDS[action]} for site {site}{note}"


def trigger_now(rt: Runtime, user: str, site: str, method: str) -> str:
    from benchcelery.scheduler.trigger import trigger

    rt.bench.require_site(site)
    with _lock:
        result = trigger(rt, [site], method)
    outcome = ", ".join(run.status for run in result.runs) or "nothing to run"
    _log(user, "trigger", f"{site} {method}", outcome)
    if result.runs and result.runs[0].status == "skipped":
        return f"Run now: {method} not queued for {site}: its previous run is still queued or running"
    if result.runs and result.runs[0].error:
        return f"Run now: {method} failed for {site}: {result.runs[0].error}"
    return f"Run now: {method} {outcome} for {site}"


# --- delayed jobs (scheduled to run later, retrying): what `bench jobs run-now` / `give-up` do ---
def run_now(rt: Runtime, user: str, job_id: str) -> str:
    """Move a scheduled or retrying job to its queue now (it keeps its id and attempts)."""
    from benchcelery.jobs import scheduled

    if not scheduled.run_now(rt, job_id):
        _log(user, "run-now", job_id, "error: not delayed")
        raise ValidationError(f"Job {job_id} is not scheduled or retrying (any more)")
    _log(user, "run-now", job_id, "queued")
    return f"Queued {job_id}"


def give_up(rt: Runtime, user: str, job_id: str) -> str:
    """Cancel a scheduled job, or give up on a retrying one (recorded as failed with its attempts)."""
    from benchcelery.jobs import scheduled

    row = scheduled.cancel(rt, job_id)
    if row is None:
        _log(user, "give-up", job_id, "error: not delayed")
        raise ValidationError(f"Job {job_id} is not scheduled or retrying (any more)")
    if row.kind == registry.RETRYING:
        _log(user, "give-up", job_id, "recorded as failed")
        return f"Gave up on {job_id} (recorded as failed)"
    _log(user, "cancel-scheduled", job_id, "cancelled")
    return f"Cancelled {job_id}"
