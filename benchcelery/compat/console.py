"""Console-only stand-ins for ``frappe`` and ``rq``, so the guide's console snippets run as written:

    >>> frappe.enqueue('my_module.my_function', queue='short')
    >>> frappe.cache().ping()
    >>> from rq import Queue
    >>> from frappe.utils.background_jobs import get_redis_conn
    >>> q = Queue('default', connection=get_redis_conn())
    >>> q.failed_job_registry.get_job_ids()

They answer from benchcelery's own keys for the console's site. ``install_console_shims`` puts them in
``sys.modules`` of the console process only (the real rq, if installed, is shadowed there).

``frappe.cache()`` is the *cache* Redis (config ``redis_cache``; ``bench init`` writes the queue
server's next database number), never the queue: the guide's ``frappe.cache().flushall()`` must
not empty every queued job, failure record and schedule. While the cache shares its server with the
queue, ``flushall()`` empties the cache's database only (a raw FLUSHALL, which would empty every
database, is refused), and ``get_redis_conn()`` (the queue Redis) refuses FLUSHALL, FLUSHDB and SWAPDB.
"""

from __future__ import annotations

import sys
import types
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


class Queue:
    """``rq.Queue(name, connection=...)`` over a benchcelery queue of the console's site."""

    def __init__(self, name: str = "default", connection: Any = None, **_: Any) -> None:
        _runtime().settings.validate_queue(name)
        self.name = name
        self.failed_job_registry = _FailedJobRegistry(name)

    @property
    def count(self) -> int:
        from benchcelery.context import local
        from benchcelery.jobs.inspect import count_pending

        rt = _runtime()
        return count_pending(rt.redis, rt.keys, [self.name]).get(self.name, {}).get(local.site or "", 0)

    def __len__(self) -> int:
        return self.count


def _guarded_client(
    url: str, refused: frozenset[str], why: str, flushall_is_flushdb: bool = False, **options: Any
) -> Any:
    """A redis-py client that refuses ``refused`` commands with one clear error (console only).
    With ``flushall_is_flushdb``, ``flushall()`` empties only the client's own database."""
    import redis

    from benchcelery.errors import BenchError

    class GuardedRedis(redis.Redis):
        def execute_command(self, *args: Any, **kw: Any) -> Any:
            name = str(args[0]).upper() if args else ""
            if name in refused:
                raise BenchError(f"{name} refused: {why}")
            return super().execute_command(*args, **kw)

        def flushall(self, asynchronous: bool = False, **kw: Any) -> Any:
            if flushall_is_flushdb:
                return self.flushdb(asynchronous=asynchronous, **kw)
            return super().flushall(asynchronous=asynchronous, **kw)

    from benchcelery.store import sentinel

    if sentinel.is_sentinel_url(url):  # the current master, through the sentinels
        return sentinel.client_for(url, _runtime().settings, redis_class=GuardedRedis, **options)
    return GuardedRedis.from_url(url, **options)


QUEUE_REFUSED = frozenset({"FLUSHALL", "FLUSHDB", "SWAPDB"})


def queue_client() -> Any:
    """The queue Redis for console snippets (``get_redis_conn()``); refuses to flush it."""
    rt = _runtime()
    return _guarded_client(
        rt.settings.redis_url,
        QUEUE_REFUSED,
        "this is the queue Redis (queued jobs, failure records, schedules); use bench purge-jobs",
        username=rt.settings.username,
        password=rt.settings.password,
    )


def cache_client() -> Any:
    """``frappe.cache()``: the cache Redis (config ``redis_cache``), never the queue. While the cache
    shares the queue's server, ``flushall()`` (the guide's "clears all cache") empties the cache's
    database only, and a raw FLUSHALL or SWAPDB is refused."""
    from benchcelery.bench.config import cache_url
    from benchcelery.bench.redis_url import same_server

    rt = _runtime()
    url = cache_url(rt.settings)
    shared = same_server(url, rt.settings.redis_url)
    refused = frozenset({"FLUSHALL", "SWAPDB"}) if shared else frozenset()
    why = "the cache Redis shares its server with the queue; FLUSHALL would empty the queue too"
    return _guarded_client(url, refused, why, flushall_is_flushdb=shared)


def frappe_shim() -> types.ModuleType:
    import benchcelery

    frappe = types.ModuleType("frappe")
    frappe.enqueue = benchcelery.enqueue  # type: ignore[attr-defined]
    frappe.cache = cache_client  # type: ignore[attr-defined]
    frappe.local = benchcelery.local  # type: ignore[attr-defined]
    frappe.publish_realtime = benchcelery.publish_realtime  # type: ignore[attr-defined]
    frappe.get_job = benchcelery.get_job  # type: ignore[attr-defined]
    frappe.is_job_enqueued = benchcelery.is_job_enqueued  # type: ignore[attr-defined]
    frappe.enqueue_in = benchcelery.enqueue_in  # type: ignore[attr-defined]
    frappe.enqueue_at = benchcelery.enqueue_at  # type: ignore[attr-defined]
    frappe.RetryBackgroundJobError = benchcelery.RetryBackgroundJobError  # type: ignore[attr-defined]
    return frappe


def install_console_shims() -> types.ModuleType:
    """Register ``frappe``, ``frappe.utils.background_jobs`` and ``rq`` for this process; returns frappe."""
    import benchcelery

    frappe = frappe_shim()
    utils = types.ModuleType("frappe.utils")
    jobs = types.ModuleType("frappe.utils.background_jobs")
    jobs.get_redis_conn = lambda *a, **kw: queue_client()  # type: ignore[attr-defined]
    jobs.enqueue = benchcelery.enqueue  # type: ignore[attr-defined]
    jobs.get_job = benchcelery.get_job  # type: ignore[attr-defined]
    jobs.is_job_enqueued = benchcelery.is_job_enqueued  # type: ignore[attr-defined]
    jobs.enqueue_in = benchcelery.enqueue_in  # type: ignore[attr-defined]
    jobs.enqueue_at = benchcelery.enqueue_at  # type: ignore[attr-defined]
    jobs.RetryBackgroundJobError = benchcelery.RetryBackgroundJobError  # type: ignore[attr-defined]
    frappe.utils = utils  # type: ignore[attr-defined]
    utils.background_jobs = jobs  # type: ignore[attr-defined]
    rq = types.ModuleType("rq")
    rq.Queue = Queue  # type: ignore[attr-defined]
    sys.modules.update({"frappe": frappe, "frappe.utils": utils, "frappe.utils.background_jobs": jobs, "rq": rq})
    return frappe
