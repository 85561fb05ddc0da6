"""kombu's Redis transport, reusing one redis-py client per channel.

Stock kombu 5.7 builds a new ``redis.Redis`` object for every operation (``conn_or_acquire``);
with redis-py 8 that costs ~15 % of a worker's CPU and ~20 % of ``apply_async``
(reference/peer-performance.md). The client is thread-safe (each command takes a connection from
the pool), so one per channel is enough; it is rebuilt when kombu replaces the pool (after fork or
a reconnect).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kombu.transport import redis as kombu_redis


class Channel(kombu_redis.Channel):
    _shared_client: Any = None

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        if client:
            yield client
            return
        shared = self._shared_client
        if shared is None or shared.connection_pool is not self._pool:
            shared = self._shared_client = self._create_client()
        yield shared


class Transport(kombu_redis.Transport):
    Channel = Channel
