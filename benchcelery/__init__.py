"""benchcelery: Frappe bench's background jobs on Celery + Redis.

Public API::

    import benchcelery
    benchcelery.init(site="site1.local", bench_path="/path/to/bench")
    job = benchcelery.enqueue("myapp.tasks.send_report", queue="short", report="daily")
    benchcelery.get_job_status(job.short_id)    # queued / started / finished / failed / None

Inside a job, ``benchcelery.local.site`` / ``.conf`` / ``.user`` / ``.job`` describe its context.
"""

from __future__ import annotations

from typing import Any

from benchcelery.context import local
from benchcelery.runtime import init

__version__ = "0.1.0"
__all__ = [
    "enqueue",
    "enqueue_many",
    "get_job",
    "get_job_status",
    "init",
    "is_job_enqueued",
    "local",
    "publish_realtime",
]


def __getattr__(name: str) -> Any:
    # Lazy: importing benchcelery must not import Celery (the CLI stays fast).
    if name in ("enqueue", "enqueue_many", "get_job", "get_job_status", "is_job_enqueued"):
        from benchcelery.jobs import enqueue as module

        value = globals()[name] = getattr(module, name)  # once: enqueue is called in hot loops
        return value
    if name == "publish_realtime":
        from benchcelery.realtime import publish_realtime

        return publish_realtime
    raise AttributeError(name)
