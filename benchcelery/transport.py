"""kombu's Redis transport with two changes benchcelery relies on.

1. One redis-py client per channel. Stock kombu 5.7 builds a new ``redis.Redis`` object for every
   operation (``conn_or_acquire``); with redis-py 8 that costs ~15 % of a worker's CPU and ~20 % of
   ``apply_async`` (reference/peer-performance.md). The client is thread-safe (each command takes a
   connection from the pool); it is rebuilt when kombu replaces the pool (after fork or reconnect).
2. Waiting jobs are counted per site as they move: every push adds one to the hash
   ``pending:<queue>`` (field = the job's site) in the same MULTI as the LPUSH, every take by a
   worker subtracts one in the same MULTI that parks the message in ``unacked``, every restore adds
   it back. ``show-pending-jobs`` then answers from a hash instead of scanning 100,000 messages, and
   checks the counts against LLEN (jobs/inspect.py re-counts exactly when they disagree).

Elements that are not JSON messages are recorded as failed jobs instead of crashing the worker.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from time import time
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps, loads

from benchcelery.ha import execute_push
from benchcelery.keys import UNKNOWN_SITE, Keys


def _site(message: Any) -> str:
    try:
        return str(message["headers"].get("site") or UNKNOWN_SITE)
    except (KeyError, TypeError, AttributeError):
        return UNKNOWN_SITE


class QoS(kombu_redis.QoS):
    def append(self, message: Any, delivery_tag: str) -> None:
        delivery = message.delivery_info
        exchange, routing_key = delivery["exchange"], delivery["routing_key"]
        site = str((message.headers or {}).get("site") or UNKNOWN_SITE)
        with self.pipe_or_acquire() as pipe:
            pipe.zadd(self.unacked_index_key, {delivery_tag: time()}).hset(
                self.unacked_key, delivery_tag, dumps([message._raw, exchange, routing_key])
            ).hincrby(self.channel.counts_key(routing_key), site, -1).execute()
            virtual.QoS.append(self, message, delivery_tag)


class Channel(kombu_redis.Channel):
    QoS = QoS
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

    def counts_key(self, queue: str) -> str:
        # HINCRBY is not among the commands kombu prefixes: give the full name.
        return Keys.from_prefix(self.global_keyprefix or "").pending_counts(queue)

    def _put(self, queue: str, message: Any, **kwargs: Any) -> None:
        pri = self._get_message_priority(message, reverse=False)
        key = self._q_for_pri(queue, pri)
        counts, site = self.counts_key(queue), _site(message)
        batch = kwargs.pop("_publish_batch", None)
        if batch is not None:
            batch.add("lpush", key, dumps(message))
            batch.add("hincrby", counts, site, 1)
            return
        with self.conn_or_acquire() as client, client.pipeline() as pipe:
            pipe.lpush(key, dumps(message)).hincrby(counts, site, 1)
            execute_push(pipe, self.connection.client.transport_options)  # WAIT for replicas when configured (ha.py)

    def _do_restore_message(
        self, payload: Any, exchange: str, routing_key: str, pipe: Any, leftmost: bool = False
    ) -> None:
        super()._do_restore_message(payload, exchange, routing_key, pipe, leftmost)
        for queue in self._lookup(exchange, routing_key):
            pipe.hincrby(self.counts_key(queue), _site(payload), 1)

    def _purge(self, queue: str) -> int:
        size = super()._purge(queue)
        with self.conn_or_acquire() as client:
            client.delete(self.counts_key(queue))
        return int(size)

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
            self._in_poll = None  # type: ignore[assignment]
            self._flush_brpop_reauth()


def _record_malformed(queue: str, item: Any, exc: Exception) -> None:
    import uuid

    from benchcelery.jobs.execute import record

    raw = item[:2000].decode("utf-8", "replace") if isinstance(item, bytes) else str(item)[:2000]
    meta = {"job_id": f"{UNKNOWN_SITE}::{uuid.uuid4()}", "site": UNKNOWN_SITE, "queue": queue, "method": ""}
    record(meta, {"raw": raw}, ValueError(f"Malformed message: {exc}"), None)


class Transport(kombu_redis.Transport):
    Channel = Channel
