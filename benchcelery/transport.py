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
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import loads


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

    def _brpop_read(self, **options: Any) -> bool:
        """kombu's, except that an element that is not a JSON message is recorded as a failed job
        instead of crashing the worker (stock kombu raises JSONDecodeError out of the event loop)."""
        try:
            try:
                dest__item = self.client.parse_response(self.client.connection, "BRPOP", **options)
            except self.connection_errors:
                self.client.connection.disconnect()
                raise
            if not dest__item:
                raise kombu_redis.Empty()
            dest, item = dest__item
            dest = bytes_to_str(dest).rsplit(self.sep, 1)[0]
            self._queue_cycle.rotate(dest)
            try:
                message = loads(bytes_to_str(item))
            except (ValueError, TypeError) as exc:
                _record_malformed(dest, item, exc)
                return True
            self.connection._deliver(message, dest)
            return True
        finally:
            self._in_poll = None
            self._flush_brpop_reauth()


def _record_malformed(queue: str, item: Any, exc: Exception) -> None:
    import uuid

    from benchcelery.jobs.execute import record

    raw = item[:2000].decode("utf-8", "replace") if isinstance(item, bytes) else str(item)[:2000]
    meta = {"job_id": f"?::{uuid.uuid4()}", "site": "?", "queue": queue, "method": ""}
    record(meta, {"raw": raw}, ValueError(f"Malformed message: {exc}"), None)


class Transport(kombu_redis.Transport):
    Channel = Channel
