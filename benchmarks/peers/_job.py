"""The job body every peer runs: one ``INCR`` of the harness's counter, on a client per process
(per event loop for the asyncio peers), created on first use so forked pool processes never
share a socket."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any

import redis
import redis.asyncio

from benchmarks.apps import COUNTER, URL_ENV

URL = os.environ.get(URL_ENV, "redis://127.0.0.1:6379/0")
_sync: tuple[int, redis.Redis] | None = None
_async: dict[tuple[int, int], redis.asyncio.Redis] = {}


def client() -> redis.Redis:
    global _sync
    if _sync is None or _sync[0] != os.getpid():
        _sync = (os.getpid(), redis.Redis.from_url(URL))
    return _sync[1]


def incr() -> None:
    client().incr(COUNTER)


async def aincr() -> None:
    key = (os.getpid(), id(asyncio.get_running_loop()))
    conn = _async.get(key)
    if conn is None:
        conn = _async[key] = redis.asyncio.Redis.from_url(URL)
    await conn.incr(COUNTER)


Call = Callable[[int], None]  # enqueue k jobs


def looped(make: Callable[[], Coroutine[Any, Any, Callable[[int], Coroutine[Any, Any, None]]]]) -> Call:
    """A synchronous ``call(k)`` over an asyncio peer's client, on one event loop kept for the process."""
    loop = asyncio.new_event_loop()
    enqueue_k = loop.run_until_complete(make())

    def call(k: int) -> None:
        loop.run_until_complete(enqueue_k(k))

    return call
