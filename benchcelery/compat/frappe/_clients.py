"""The Redis clients of the stand-in: ``frappe.cache()`` and ``get_redis_conn()``.

``frappe.cache()`` is the *cache* Redis (config ``redis_cache``; ``bench init`` writes the queue
server's next database number), never the queue: the guide's ``frappe.cache().flushall()`` must
not empty every queued job, failure record and schedule. While the cache shares its server with the
queue, ``flushall()`` empties the cache's database only (a raw FLUSHALL, which would empty every
database, is refused), and ``get_redis_conn()`` (the queue Redis) refuses FLUSHALL, FLUSHDB and SWAPDB.
"""

from __future__ import annotations

from typing import Any

from benchcelery.runtime import get_runtime as _runtime


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
