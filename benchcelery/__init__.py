"""benchcelery: Frappe bench's background jobs on Celery + Redis.

Public API::

    import benchcelery
    benchcelery.init(site="site1.local", bench_path="/path/to/bench")
    job = benchcelery.enqueue("myapp.tasks.send_report", queue="short", report="daily")
    benchcelery.get_job_status(job.short_id)    # queued / started / finished / failed / None
    benchcelery.enqueue_in(600, "myapp.tasks.remind", retry=benchcelery.Retry(max=3, interval=[10, 60]))

    @benchcelery.rate_limit("10/s")   # in an app: at most 10 starts a second, bench-wide (jobs/ratelimit.py)
    def sync(doc): ...

Inside a job, ``benchcelery.local.site`` / ``.conf`` / ``.user`` / ``.job`` describe its context.
"""

from __future__ import annotations

from typing import Any

from benchcelery.context import local
from benchcelery.runtime import init

__version__ = "0.1.0"
__all__ = [
    "Retry",
    "RetryBackgroundJobError",
    "RetryJob",
    "enqueue",
    "enqueue_at",
    "enqueue_in",
    "enqueue_many",
    "get_job",
    "get_job_status",
    "init",
    "is_job_enqueued",
    "local",
    "publish_realtime",
    "rate_limit",
]


def __getattr__(name: str) -> Any:
    # Lazy: importing benchcelery must not import Celery (the CLI stays fast).
    if name in ("enqueue", "enqueue_many", "get_job", "get_job_status", "is_job_enqueued"):
        from benchcelery.jobs import enqueue as module

        value = globals()[name] = getattr(module, name)  # once: enqueue is called in hot loops
        return value
    if name in ("enqueue_in", "enqueue_at"):
        from benchcelery.jobs import later

        return getattr(later, name)
    if name in ("Retry", "RetryJob", "RetryBackgroundJobError"):
        from benchcelery.jobs import retry

        return getattr(retry, name)
    if name == "rate_limit":
        from benchcelery.jobs.ratelimit import rate_limit

        return rate_limit
    if name == "publish_realtime":
        from benchcelery.realtime import publish_realtime

        return publish_realtime
    raise AttributeError(name)
