"""Running one job in a worker: site context, allowlist, hooks, outcome bookkeeping.

Every way a job can end badly lands in the failed-job registry: the method raises or exceeds its
timeout (recorded here, in the pool process), its pool process is killed or exceeds the hard limit
(recorded by ``JobRequest`` in the worker's main process), or the message names an unknown site,
a forbidden method or is malformed (recorded before anything is imported or run).
"""

from __future__ import annotations

import logging
import os
import time
import traceback
from typing import Any

from billiard.exceptions import SoftTimeLimitExceeded, WorkerLostError
from celery import Task, shared_task
from celery.exceptions import TimeLimitExceeded
from celery.worker.request import Request

from benchcelery.bench.keys import UNKNOWN_SITE
from benchcelery.bench.layout import COMMON_CONFIG
from benchcelery.broker.celery_app import EXECUTE_JOB, WORKER_LOST_RETRIES
from benchcelery.context import local
from benchcelery.errors import BenchError
from benchcelery.jobs import durations, registry
from benchcelery.jobs.hooks import job_hooks
from benchcelery.jobs.methods import resolve
from benchcelery.runtime import get_runtime

logger = logging.getLogger("benchcelery.job")


class JobRefused(Exception):
    """The message may not run (unknown site, forbidden method, worker died too often)."""


class _SiteConfigCache:
    """Merged site config, re-read when either JSON file changes."""

    def __init__(self) -> None:
        self._cache: dict[str, tuple[tuple[float, float], dict[str, Any]]] = {}

    def get(self, site: str, site_mtime: float) -> dict[str, Any]:
        """``site_mtime``: the site_config.json stamp (Bench.site_config_mtime, the stat that found the site)."""
        bench = get_runtime().bench
        sites = bench.sites_dir  # not pathlib: this runs for every job
        stamp = (_mtime(f"{sites}/{COMMON_CONFIG}"), site_mtime)
        hit = self._cache.get(site)
        if hit and hit[0] == stamp:
            return hit[1]
        conf = bench.merged_config(site)
        self._cache[site] = (stamp, conf)
        return conf


def _mtime(path: str) -> float:
    try:
        return os.stat(path).st_mtime
    except FileNotFoundError:
        return 0.0


site_configs = _SiteConfigCache()


def job_meta(request: Any) -> dict[str, Any]:
    """What a message's headers say about the job (site, method, event, ...)."""

    def h(name: str, default: Any = None) -> Any:
        value = getattr(request, name, None)
        if value is None and isinstance(getattr(request, "headers", None), dict):
            value = request.headers.get(name)
        return default if value is None else value

    delivery = getattr(request, "delivery_info", None) or {}
    return {
        "job_id": request.id,
        "site": h("site"),
        "method": h("method") or getattr(request, "shadow", None) or "",
        "event": h("event"),
        "user": h("user"),
        "job_name": h("job_name"),
        "queue": delivery.get("routing_key") or "default",
        "enqueued_at": h("enqueued_at"),
        "tracked": bool(h("tracked", False)),
        "on_success": h("on_success"),
        "on_failure": h("on_failure"),
        "timeout": (h("timelimit") or [None, None])[1],
        "redelivered": int(delivery.get("redelivered") or 0),  # times its lease lapsed (transport.py)
    }


def execute_job(task: Any, /, *args: Any, **kwargs: Any) -> Any:
    """The Celery task behind every job: run ``method(**kwargs)`` in its site's context.

    ``task`` is positional-only, so a job's keyword arguments may use any name (``task``, ``self``).
    """
    request = task.request
    meta = job_meta(request)
    meta["worker"] = request.hostname
    meta["started_at"] = time.time()
    rt = get_runtime()
    apps = rt.apps()
    try:
        if args:
            raise JobRefused("A job takes keyword arguments only; this message carries positional ones")
        fn, site_mtime = _admit(rt, meta, apps)
        conf = _site_config(meta["site"], site_mtime)
    except JobRefused as exc:
        record(meta, {"args": list(args), **kwargs} if args else kwargs, exc, tb=None)
        raise
    r = rt.redis
    keys = rt.keys
    if meta["tracked"]:
        # Overwritten when the job ends; the expiry only guards against a status outliving its job.
        r.set(keys.job_status(meta["job_id"]), registry.STARTED, ex=int(meta["timeout"] or 7200) + 3600)
    local.site = meta["site"]
    local.conf = conf
    local.user = meta["user"]
    # after_job: callbacks run after every job; on_commit: only after it succeeded (e.g. realtime
    # events published with after_commit=True).
    local.job = {**meta, "kwargs": kwargs, "after_job": [], "on_commit": []}
    result: Any = None
    try:
        for hook in job_hooks(apps, "before_job"):
            hook(method=meta["method"], kwargs=kwargs)
        result = fn(**kwargs)
    except Exception as exc:
        # Not BaseException: SystemExit means its process is being stopped, by `jobs cancel
        # --terminate` (JobRequest.terminate records that) or by a cold shutdown (the job goes
        # back to its queue, so it is no failure).
        record(meta, kwargs, exc, tb=traceback.format_exc())
        _callback(rt, meta.get("on_failure"), meta, exc)
        raise
    else:
        if meta["tracked"]:
            r.set(keys.job_status(meta["job_id"]), registry.FINISHED, ex=rt.settings.number("rq_results_ttl"))
        # The duration histogram of a job that succeeded is written by the worker's main process,
        # in the same write as the job's ack (JobRequest.on_success): no round trip here.
        for callback in (local.job or {}).get("on_commit", []):
            try:
                callback()
            except Exception:  # the job itself succeeded; a failing side effect must not undo that
                logger.exception("on_commit callback of job %s failed", meta["job_id"])
        _callback(rt, meta.get("on_success"), meta, result)
        notify_finished(meta, None)
        return None  # results are not stored (task_ignore_result); the job's side effects are
    finally:
        try:
            for hook in job_hooks(apps, "after_job"):
                hook(method=meta["method"], kwargs=kwargs, result=result)
            for callback in (local.job or {}).get("after_job", []):
                callback()
        finally:
            local.reset()


def _admit(rt: Any, meta: dict[str, Any], apps: list[str]) -> tuple[Any, float]:
    """Check the message may run; returns the method and the stamp of its site's config (the stat
    that found the site exists). Raises JobRefused."""
    site = meta["site"]
    site_mtime = rt.bench.site_config_mtime(site) if site else None
    if site_mtime is None:
        raise JobRefused(f"Site {site} does not exist!")
    try:
        fn = resolve(meta["method"], apps, rt.allowed_methods())
    except BenchError as exc:
        raise JobRefused(str(exc)) from None
    lapses = meta["redelivered"]
    if lapses and lapses > rt.settings.number("max_redeliveries"):
        raise JobRefused(f"Not run again: its worker died {lapses} times while it held the job")
    return fn, site_mtime


def _site_config(site: str, site_mtime: float) -> dict[str, Any]:
    """The site's merged config; one it cannot read, or with bad values (config_schema.py), refuses the job."""
    try:
        return site_configs.get(site, site_mtime)
    except BenchError as exc:
        raise JobRefused(str(exc)) from None
    except (OSError, ValueError) as exc:
        raise JobRefused(f"The config of site {site} cannot be read: {exc}") from None


def _callback(rt: Any, name: str | None, meta: dict[str, Any], value: Any) -> None:
    if not name:
        return
    try:
        resolve(name, rt.apps(), rt.allowed_methods())(meta, value)
    except Exception:
        logger.exception("Callback %s of job %s failed", name, meta["job_id"])


def notify_finished(meta: dict[str, Any], error: str | None) -> None:
    """Tell the listeners (the scheduler's run log) how a scheduled job (one with an ``event``) ended."""
    if not meta.get("event"):
        return
    from benchcelery.jobs.listeners import job_finished

    try:
        job_finished(meta, error)
    except Exception:
        logger.exception("Could not record the run of scheduled job %s", meta.get("job_id"))


def describe_exception(exc: BaseException, timeout: int | None = None) -> str:
    if isinstance(exc, SoftTimeLimitExceeded):
        return f"JobTimeoutException: Job exceeded maximum timeout value ({timeout} seconds)"
    if isinstance(exc, SystemExit | KeyboardInterrupt):
        return "JobTerminated: stopped while running (bench jobs cancel --terminate)"
    if isinstance(exc, TimeLimitExceeded):
        return f"JobTimeoutException: Job killed after its hard time limit ({exc.args[0]} seconds)"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


RAW_CAP = 4000  # characters of a malformed message kept in its failure record


def record_malformed(queue: str, raw: bytes | str, reason: str, tag: str) -> None:
    """Record a queue element that is not a valid message (never raises)."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    meta = {"job_id": f"{UNKNOWN_SITE}::{tag}", "site": UNKNOWN_SITE, "queue": queue, "method": ""}
    record(meta, {}, ValueError(reason), None, raw=text[:RAW_CAP])


def record(meta: dict[str, Any], kwargs: Any, exc: BaseException, tb: str | None, raw: str | None = None) -> None:
    """Write the failure to the registry; never raises (a worker must keep running)."""
    try:
        rt = get_runtime()
        rec = {
            **{k: meta.get(k) for k in ("job_id", "site", "queue", "method", "event", "user", "job_name")},
            **{k: meta.get(k) for k in ("worker", "enqueued_at", "started_at", "timeout")},
            "kwargs": kwargs,
            "exception": describe_exception(exc, meta.get("timeout")),
            "traceback": tb or "",
            "pid": os.getpid(),
        }
        if raw is not None:
            rec["raw"] = raw
        queue = meta.get("queue") or "default"
        registry.record_failure(
            rt.redis,
            rt.keys,
            queue,
            rec,
            limit=rt.settings.number("rq_failed_jobs_limit"),
            ttl=rt.settings.number("rq_job_failure_ttl"),
        )
        if meta.get("tracked"):
            rt.redis.delete(rt.keys.job_status(meta["job_id"]))
        name = meta.get("worker")
        if name:
            rt.redis.hincrby(rt.keys.worker(name), "failed", 1)
        durations.record(rt.redis, rt.keys, meta)  # failed runs count in the duration histogram too
        logger.info("Recorded the failure of job %s (%s): %s", meta.get("job_id"), meta.get("method"), rec["exception"])
        notify_finished(meta, rec["exception"])
    except Exception:
        logger.exception("Could not record the failure of job %s", meta.get("job_id"))


class JobTask(Task):
    """The task class of ``execute_job``: ``self`` is positional-only (Celery's own ``__call__``
    takes ``self`` by name, so a message whose kwargs name ``self`` failed before any bookkeeping)."""

    def __call__(self, /, *args: Any, **kwargs: Any) -> Any:
        return self.run(*args, **kwargs)


class _Commands:
    """Collects the pipeline calls of durations.observe as raw commands."""

    def __init__(self) -> None:
        self.list: list[tuple[Any, ...]] = []

    def hincrby(self, key: str, field: str, amount: int) -> None:
        self.list.append(("HINCRBY", key, field, amount))

    def hincrbyfloat(self, key: str, field: str, amount: float) -> None:
        self.list.append(("HINCRBYFLOAT", key, field, repr(float(amount))))


class JobRequest(Request):
    """Records failures that happen outside the job's own process (hard timeout, dead pool
    process, `jobs cancel --terminate`), in the worker's main process."""

    def terminate(self, pool: Any, signal: Any = None) -> None:
        super().terminate(pool, signal)
        self._record(SystemExit("terminated"), None)

    def send_event(self, type: str, **fields: Any) -> None:
        # Celery's per-worker request class replaces on_success; the success event (sent whether
        # events are enabled or not) is where a success and its run time show. A failure was
        # counted where it was recorded (record).
        if type == "task-succeeded":
            self._observe(fields.get("runtime") or 0.0)
        super().send_event(type, **fields)

    def _observe(self, runtime: float) -> None:
        """Count the job in the duration histogram (bench metrics): queued on the transport channel,
        which sends it with the job's ack (transport.Channel.note), else written now."""
        meta = {
            "method": self._request_dict.get("method") or self.task_name,
            "queue": (self.delivery_info or {}).get("routing_key") or "default",
            "started_at": time.time() - (runtime or 0.0),
        }
        try:
            rt = get_runtime()
            note = getattr(getattr(self.message, "channel", None), "note", None)
            if note is None:
                durations.record(rt.redis, rt.keys, meta)
            else:
                commands = _Commands()
                durations.observe(commands, rt.keys, meta)
                note(commands.list)
        except Exception:  # metrics must never fail a job
            logger.warning("Could not count the duration of job %s", self.id, exc_info=True)

    def on_timeout(self, soft: bool, timeout: float) -> None:
        super().on_timeout(soft, timeout)
        from celery.worker import state

        if not soft and not state.should_terminate:
            self._record(TimeLimitExceeded(timeout), None)

    def on_failure(self, exc_info: Any, send_failed_event: bool = True, return_ok: bool = False) -> None:
        from celery.worker import state

        if state.should_terminate:
            # A cold shutdown stopped the job: it is not acknowledged, and goes back to its queue
            # (transport.QoS.restore_unacked) — neither retried nor recorded as failed.
            return
        exc = exc_info.exception
        exc = getattr(exc, "exc", exc)
        super().on_failure(exc_info, send_failed_event=send_failed_event, return_ok=return_ok)
        if isinstance(exc, WorkerLostError) and self._context.retries >= (self.task.max_retries or 0):
            self._record(exc, exc_info.traceback)

    def _record(self, exc: BaseException, tb: str | None) -> None:
        meta = job_meta(self._context)
        meta["worker"] = self.hostname
        record(meta, self.kwargs, exc, tb)


# Every bench's Celery app gets the task through Celery's shared-task registry, so celery_app.py does
# not import this module: it names it in the worker's imports (celery_app.WORKER_IMPORTS).
shared_task(
    name=EXECUTE_JOB,
    bind=True,
    base=JobTask,
    Request=JobRequest,
    max_retries=WORKER_LOST_RETRIES,
    default_retry_delay=0,
    acks_late=True,
)(execute_job)
