"""Running one job in a pool process: site context, allowlist, hooks, outcome bookkeeping.

Every way a job can end badly lands in the failed-job registry (failures.py): the method raises or
exceeds its timeout (recorded here, in the pool process), its pool process is killed or exceeds
the hard limit (recorded by ``JobRequest`` in the worker's main process, request.py), or the
message names an unknown site, a forbidden method or is malformed (recorded before anything is
imported or run).

Celery loads this module in every worker (and in any process when its app is finalized): it
registers the job task and gives the broker's transport its hooks (broker/hooks.py).
"""

from __future__ import annotations

import logging
import os
import time
import traceback
from typing import Any

from celery import Task, shared_task

from benchcelery.bench.keys import EXECUTE_JOB
from benchcelery.bench.layout import COMMON_CONFIG
from benchcelery.broker.celery_app import WORKER_LOST_RETRIES
from benchcelery.broker.hooks import hooks as transport_hooks
from benchcelery.context import local
from benchcelery.errors import BenchError
from benchcelery.jobs import deadline, ratelimit, registry, retry
from benchcelery.jobs.callbacks import run_callback
from benchcelery.jobs.failures import RECORD_WAIT, describe_exception, notify_finished, record, record_malformed
from benchcelery.jobs.hooks import call_hook, job_hooks
from benchcelery.jobs.methods import resolve
from benchcelery.jobs.request import JobRequest, job_meta, running_tags, shutting_down
from benchcelery.jobs.results import store_result
from benchcelery.jobs.retrying import RetryScheduled
from benchcelery.runtime import get_runtime

logger = logging.getLogger("benchcelery.job")


class JobRefused(Exception):
    """The message may not run (unknown site, forbidden method, worker died too often)."""


STAT_EVERY = 1.0  # s: a worker looks at apps.txt and the config files at most this often


class _Stamps:
    """What the file system says about apps.txt, the common config and each site's config, asked
    at most every STAT_EVERY seconds (a busy worker ran a few stat calls for every job): an edit,
    a new app or a removed site counts from the next job after that."""

    def __init__(self) -> None:
        self._apps: tuple[float, list[str]] = (-STAT_EVERY, [])
        self._common: tuple[float, float] = (-STAT_EVERY, 0.0)
        self._sites: dict[str, tuple[float, float | None]] = {}

    def apps(self, rt: Any) -> list[str]:
        now = time.monotonic()
        if now - self._apps[0] >= STAT_EVERY:
            self._apps = (now, rt.apps())
        return self._apps[1]

    def common_mtime(self, sites_dir: str) -> float:
        now = time.monotonic()
        if now - self._common[0] >= STAT_EVERY:
            self._common = (now, _mtime(f"{sites_dir}/{COMMON_CONFIG}"))
        return self._common[1]

    def site_mtime(self, rt: Any, site: str) -> float | None:
        """Bench.site_config_mtime (None: no such site)."""
        now = time.monotonic()
        hit = self._sites.get(site)
        if hit is None or now - hit[0] >= STAT_EVERY:
            if len(self._sites) > 10_000:
                self._sites.clear()
            hit = self._sites[site] = (now, rt.bench.site_config_mtime(site))
        return hit[1]


stamps = _Stamps()


class _SiteConfigCache:
    """Merged site config, re-read when either JSON file changes."""

    def __init__(self) -> None:
        self._cache: dict[str, tuple[tuple[float, float], dict[str, Any]]] = {}

    def get(self, site: str, site_mtime: float) -> dict[str, Any]:
        """``site_mtime``: the site_config.json stamp (Bench.site_config_mtime, the stat that found the site)."""
        bench = get_runtime().bench
        stamp = (stamps.common_mtime(bench.sites_dir), site_mtime)
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


def execute_job(task: Any, /, *args: Any, **kwargs: Any) -> Any:
    """The Celery task behind every job: run ``method(**kwargs)`` in its site's context.

    ``task`` is positional-only, so a job's keyword arguments may use any name (``task``, ``self``).
    """
    request = task.request
    meta = job_meta(request)
    meta["worker"] = request.hostname
    meta["started_at"] = time.time()
    rt = get_runtime()
    apps = stamps.apps(rt)
    try:
        if args:
            raise JobRefused("A job takes keyword arguments only; this message carries positional ones")
        fn, site_mtime = _admit(rt, meta, apps)
        conf = _site_config(meta["site"], site_mtime)
    except JobRefused as exc:
        record(meta, {"args": list(args), **kwargs} if args else kwargs, exc, tb=None)
        raise
    if ratelimit.unpublished:  # this process imported rate-limited functions (jobs/ratelimit.py)
        _publish_limits(rt)
    r = rt.redis
    keys = rt.keys
    if meta["tracked"]:
        # Overwritten when the job ends; the expiry only guards against a status outliving its job.
        _set_status(r, keys.job_status(meta["job_id"]), registry.STARTED, int(meta["timeout"] or 7200) + 3600)
    local.site = meta["site"]
    local.conf = conf
    local.user = meta["user"]
    # after_job: callbacks run after every job; on_commit: only after it succeeded (e.g. realtime
    # events published with after_commit=True).
    local.job = {**meta, "kwargs": kwargs, "after_job": [], "on_commit": []}
    result: Any = None
    try:
        for hook in job_hooks(apps, "before_job"):
            call_hook(hook, method=meta["method"], kwargs=kwargs, transaction_type="job")
        result = fn(**kwargs)
    except Exception as exc:
        # Not BaseException: SystemExit means its process is being stopped, by `jobs cancel
        # --terminate` (JobRequest.terminate records that) or by a cold shutdown (the job goes
        # back to its queue, so it is no failure).
        again = _retry_decision(rt, meta, exc)
        if again is not None:  # attempts left: the worker schedules the next one with the ack
            raise RetryScheduled(*again) from exc
        record(meta, kwargs, exc, tb=traceback.format_exc(), wait=RECORD_WAIT)
        run_callback(rt, meta.get("on_failure"), meta, kwargs, exc=exc)
        raise
    else:
        if meta["tracked"]:
            _set_status(r, keys.job_status(meta["job_id"]), registry.FINISHED, rt.settings.number("rq_results_ttl"))
        # The duration histogram of a job that succeeded is written by the worker's main process,
        # in the same write as the job's ack (request.py, JobRequest.send_event): no round trip here.
        for callback in (local.job or {}).get("on_commit", []):
            try:
                callback()
            except Exception:  # the job itself succeeded; a failing side effect must not undo that
                logger.exception("on_commit callback of job %s failed", meta["job_id"])
        if result is not None or meta["tracked"]:
            store_result(rt, meta["job_id"], result)  # rq's return_value(), kept rq_results_ttl
        run_callback(rt, meta.get("on_success"), meta, kwargs, result=result)
        notify_finished(meta, None)
        return None  # not Celery's result backend (task_ignore_result): jobs/results.py keeps it
    finally:
        try:
            for hook in job_hooks(apps, "after_job"):
                call_hook(hook, method=meta["method"], kwargs=kwargs, result=result)
            for callback in (local.job or {}).get("after_job", []):
                callback()
        finally:
            local.reset()


def _publish_limits(rt: Any) -> None:
    """Write the rate limits of decorated functions this process just imported, so the next fetch
    holds them even for jobs enqueued by code older than the decorator; never raises."""
    try:
        ratelimit.publish_new(rt.redis, rt.keys)
    except Exception as exc:  # the job runs; the next job of this process tries again
        logger.warning("Could not write the rate limits of imported job functions: %s", exc)


def _retry_decision(rt: Any, meta: dict[str, Any], exc: Exception) -> Any:
    """A RetryScheduled when the job's retry policy (jobs/retry.py) allows another attempt, else None."""
    workers = rt.settings.conf.get("workers") or {}
    queue_default = (workers.get(meta["queue"]) or {}).get("retry") if isinstance(workers, dict) else None
    if meta.get("retry") is None and queue_default is None and not isinstance(exc, retry.RetryJob):
        return None
    return retry.decide(exc, meta.get("retry"), queue_default, meta["attempts"], describe_exception(exc))


# A status write runs even when Redis is out of memory (maxmemory under noeviction): the key exists
# (queued) and keeps its size, and a job must neither fail for want of its status nor keep a stale
# "queued"/"started" that blocks its next enqueue (deduplicate).
_SET_STATUS = "#!lua flags=allow-oom\nreturn redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])"


def _set_status(r: Any, key: str, status: str, ttl: int) -> None:
    """Write a job's status; never raises (the job runs, or its outcome stands, either way)."""
    try:
        r.eval(_SET_STATUS, 1, key, status, int(ttl))
    except Exception as exc:
        logger.warning("Could not write status %s of %s: %s", status, key, exc)


def _admit(rt: Any, meta: dict[str, Any], apps: list[str]) -> tuple[Any, float]:
    """Check the message may run; returns the method and the stamp of its site's config (the stat
    that found the site exists). Raises JobRefused."""
    site = meta["site"]
    site_mtime = stamps.site_mtime(rt, site) if site else None
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
    """The site's merged config; one it cannot read, or with bad values (bench/schema.py), refuses the job."""
    try:
        return site_configs.get(site, site_mtime)
    except BenchError as exc:
        raise JobRefused(str(exc)) from None
    except (OSError, ValueError) as exc:
        raise JobRefused(f"The config of site {site} cannot be read: {exc}") from None


class JobTask(Task):
    """The task class of ``execute_job``: ``self`` is positional-only (Celery's own ``__call__``
    takes ``self`` by name, so a message whose kwargs name ``self`` failed before any bookkeeping)."""

    def __call__(self, /, *args: Any, **kwargs: Any) -> Any:
        if deadline.in_process:  # `bench worker --pool solo`: no process outside to enforce the timeout
            alarm = deadline.Alarm(*deadline.limits(self.request.timelimit))
            if alarm.arm():
                try:
                    return self.run(*args, **kwargs)
                finally:
                    alarm.disarm()
        return self.run(*args, **kwargs)


# What the transport asks the layers above it (broker/hooks.py): in a worker, from here on.
transport_hooks.record_malformed = record_malformed
transport_hooks.running_tags = running_tags
transport_hooks.shutting_down = shutting_down

# Every bench's Celery app gets the task through Celery's shared-task registry, so celery_app.py does
# not import this module: it names it in the worker's imports (runtime.TASK_MODULES).
shared_task(
    name=EXECUTE_JOB,
    bind=True,
    base=JobTask,
    Request=JobRequest,
    max_retries=WORKER_LOST_RETRIES,
    default_retry_delay=0,
    acks_late=True,
)(execute_job)
