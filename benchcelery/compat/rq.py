"""A stand-in for the ``rq`` API that Frappe code and the guide's console snippets use::

    >>> from rq import Queue
    >>> from frappe.utils.background_jobs import get_redis_conn
    >>> q = Queue('default', connection=get_redis_conn())
    >>> q.failed_job_registry.get_job_ids()

It answers from benchcelery's keys for the current site. ``bench console`` registers it as ``rq`` (the
real rq, if installed, is shadowed in the console only); ``frappe.utils.background_jobs.get_queue``
returns these queues.
"""

from __future__ import annotations

from typing import Any


def _runtime() -> Any:
    from benchcelery.runtime import get_runtime

    return get_runtime()


class _FailedJobRegistry:
    def __init__(self, queue: str) -> None:
        self.queue = queue

    def get_job_ids(self) -> list[str]:
        from benchcelery.context import local
        from benchcelery.jobs import registry

        rt = _runtime()
        return registry.failed_ids(rt.redis, rt.keys, self.queue, site=local.site)

    @property
    def count(self) -> int:
        return len(self.get_job_ids())

    def __len__(self) -> int:
        return self.count


def queue_type(name: str) -> str:
    """``short`` for ``short`` or Frappe's namespaced ``<bench_id>:short``; raises ValidationError
    for a queue this bench does not have."""
    settings = _runtime().settings
    prefix = f"{settings.bench_id}:"
    qtype = name[len(prefix) :] if name.startswith(prefix) and name[len(prefix) :] in settings.queues else name
    settings.validate_queue(qtype)
    return qtype


class Queue:
    """``rq.Queue(name, connection=...)`` over a benchcelery queue of the current site; ``name`` is
    a queue type (``short``) or Frappe's ``<bench_id>:short``."""

    def __init__(self, name: str = "default", connection: Any = None, **_: Any) -> None:
        self.queue_type = queue_type(name)
        self.name = name
        self.connection = connection
        self.failed_job_registry = _FailedJobRegistry(self.queue_type)

    @classmethod
    def all(cls, connection: Any = None, **_: Any) -> list[Queue]:
        """Every queue of this bench, by Frappe's namespaced names."""
        settings = _runtime().settings
        return [cls(f"{settings.bench_id}:{q}", connection) for q in settings.queues]

    @property
    def count(self) -> int:
        from benchcelery.context import local
        from benchcelery.jobs.inspect import count_pending

        rt = _runtime()
        return count_pending(rt.redis, rt.keys, [self.queue_type]).get(self.queue_type, {}).get(local.site or "", 0)

    def get_job_ids(self, offset: int = 0, length: int = -1) -> list[str]:
        """Ids of this site's waiting jobs, the next one first."""
        from benchcelery.context import local
        from benchcelery.jobs.inspect import iter_pending

        rt = _runtime()
        ids = [job.id for job in iter_pending(rt.redis, rt.keys, self.queue_type, site=local.site)]
        return ids[offset:] if length < 0 else ids[offset : offset + length]

    @property
    def job_ids(self) -> list[str]:
        return self.get_job_ids()

    def __len__(self) -> int:
        return self.count
