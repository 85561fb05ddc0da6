"""The one place that pushes Celery messages (``enqueue`` and ``enqueue_many`` both come here);
message.py builds them.

Going through ``apply_async`` costs far more client CPU per job (router, producer, kombu's
publish, ``saferepr``, a Redis client per call) than building the same envelope here.
A push is one MULTI: one LPUSH per list (each site has its own lists in a queue), one HINCRBY per
(queue, site) for the pending counters and one for the history's enqueued count (history.py), a
ZADD NX marking the site as one with waiting jobs (so workers give it its turn, fetch.lua), wake
tokens for idle workers (as transport.py's ``_put`` does), and the "queued" status key of jobs
enqueued with an explicit id, so a single ``enqueue`` is one Redis round trip. Nothing here
imports Celery, and kombu only when the job's arguments need its JSON encoder, so ``bench
enqueue`` stays a light command.
"""
from __future__ import annotations

import contextlib
import functools
import os
import socket
import threading
import time
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any

from redis.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from benchcelery.jobs import history, ratelimit
from benchcelery.jobs.message import envelope, kwargs_repr, sender, uuid4_text
from benchcelery.jobs.registry import QUEUED
from benchcelery.store import durable as ha

if TYPE_CHECKING:
    import redis

    from benchcelery.bench.keys import Keys
    from benchcelery.jobs.ratelimit import RateLimit
    from benchcelery.runtime import Runtime

BATCH = 1000
WAKE_TOKENS = 64  # at most this many wake tokens per queue and batch (delivery.py)
_local = threading.local()  # the connection each thread keeps (_held)
__all__ = ["envelope", "kwargs_repr", "push", "sender", "transaction", "uuid4_text"]


def push(
    rt: Runtime,
    all_options: list[dict[str, Any]],
    task_name: str,
    tracked: bool = False,
    shapes: list[Hashable | None] | None = None,
    rates: dict[str, RateLimit | None] | None = None,
) -> None:
    """Build every envelope (so bad arguments write nothing), then push them in batches of BATCH;
    each batch is one MULTI: the messages, the per-site pending counters, wake tokens and, with
    ``tracked``, each job's "queued" status key (jobs enqueued with an explicit id, not claimed before).
    ``rates``: method -> its ``rate_limit`` decorator's limit (or None), written with the first
    batch so fetch.lua knows the limit before it can take the jobs (jobs/ratelimit.py).

    This is the only producer-side write of messages (transport.py's ``_put`` writes the same
    MULTI for messages Celery itself publishes). ``shapes``: each message's shape (message.py)."""
    origin, reply_to = sender()
    keys = rt.keys
    built = []
    for options, shape in zip(all_options, shapes or [None] * len(all_options), strict=True):
        key = keys.site_list(options["queue"], options["headers"]["site"], options["priority"])
        built.append((key, options, envelope(options, task_name, origin, reply_to, shape)))
    status_ttl = rt.settings.number("rq_job_failure_ttl") if tracked else 0
    wait = ha.wait_settings(rt.settings.conf)  # durable enqueue: WAIT for replicas (ha.py)
    client = rt.redis
    declared = [_pack(command) for command in ratelimit.commands(keys.rates, rates)] if rates else []
    for start in range(0, len(built), BATCH):
        commands, count = _batch(keys, built[start : start + BATCH], status_ttl)
        if start == 0 and declared:
            commands, count = declared + commands, count + len(declared)
        # With Sentinel, a lost master is waited for (enqueue_failover_wait), not an error at once.
        ha.through_failover(rt.settings, functools.partial(transaction, client, commands, wait, count))
    if declared:  # (no declaration to write: nothing new to note either)
        ratelimit.written(keys.rates, rates or {})


def _batch(keys: Keys, built: list[tuple[str, dict[str, Any], str]], status_ttl: int) -> tuple[list[bytes], int]:
    """The packed commands of one push (``status_ttl``: also SET each job's "queued" status key),
    and how many commands they are (a part may hold several)."""
    if len(built) == 1:  # a single enqueue: nothing to group
        key, options, message = built[0]
        queue, site = options["queue"], options["headers"]["site"]
        counted, count = _counted(keys, queue, site, 1)
        commands = [_push_command(key, [message]), counted, _packed("LPUSH", keys.wake(queue), "")]
        if status_ttl:
            commands.append(_pack(("SET", keys.job_status(options["task_id"]), QUEUED, "EX", status_ttl)))
        return commands, count + len(commands) - 1
    messages: dict[str, list[str]] = {}
    counts: dict[tuple[str, str], int] = {}
    commands = []
    for key, options, message in built:
        messages.setdefault(key, []).append(message)
        pair = (options["queue"], options["headers"]["site"])
        counts[pair] = counts.get(pair, 0) + 1
        if status_ttl:
            commands.append(_pack(("SET", keys.job_status(options["task_id"]), QUEUED, "EX", status_ttl)))
    for key, batch in messages.items():
        commands.append(_push_command(key, batch))  # LPUSH k m1 m2 ...: m1 is taken first, as with one LPUSH each
    per_queue: dict[str, int] = {}
    total = len(commands)
    for (queue, site), n in counts.items():
        counted, count = _counted(keys, queue, site, n)
        commands.append(counted)
        total += count
        per_queue[queue] = per_queue.get(queue, 0) + n
    for queue, n in per_queue.items():
        # Enough tokens to wake every idle worker; busy ones keep fetching until it is empty.
        commands.append(_packed("LPUSH", keys.wake(queue), *[""] * min(WAKE_TOKENS, n)))
    return commands, total + len(per_queue)


# (prefix, queue, site, n, minute, history settings) -> the packed counting commands of a push
_COUNTED: dict[tuple[str, str, str, int, int, int], tuple[bytes, int]] = {}


def _counted(keys: Keys, queue: str, site: str, n: int) -> tuple[bytes, int]:
    """The commands that count ``n`` jobs of ``site`` pushed to ``queue`` now, packed into one part,
    and how many they are: its pending counter (HINCRBY), the history's enqueued count (history.py),
    a ZADD NX marking the site as one with waiting jobs (so its turn comes: fetch.lua). The same
    within a minute, so built once a minute (the history's EXPIREATs, sent once a minute at most,
    go with the push that built them)."""
    now = time.time()
    cache_key = (keys.prefix, queue, site, n, int(now) // 60, history.generation)
    found = _COUNTED.get(cache_key)
    if found is not None:
        return found
    counting = [
        ("HINCRBY", keys.pending_counts(queue), site, n),
        *history.simple(keys, history.ENQUEUED, site, queue, n, now),
        ("ZADD", keys.sites(queue), "NX", 0, site),
    ]
    kept = [c for c in counting if c[0] != "EXPIREAT"]
    if len(_COUNTED) >= 4096:
        _COUNTED.clear()
    _COUNTED[cache_key] = (b"".join(_pack(c) for c in kept), len(kept))
    return b"".join(_pack(c) for c in counting), len(counting)


def _push_command(key: str, messages: list[str]) -> bytes:
    """``LPUSH key *messages`` packed (``_pack`` for the one command that holds whole messages)."""
    name = key.encode()
    parts = [b"*%d\r\n$5\r\nLPUSH\r\n$%d\r\n%b\r\n" % (len(messages) + 2, len(name), name)]
    for message in messages:
        data = message.encode()
        parts.append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(parts)


def _pack(args: tuple[Any, ...]) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


@functools.lru_cache(maxsize=1024)
def _packed(*args: Any) -> bytes:
    """``_pack`` of a command that recurs (a wake LPUSH)."""
    return _pack(args)


_MULTI, _EXEC = _pack(("MULTI",)), _pack(("EXEC",))


def transaction(
    client: redis.Redis, commands: list[bytes], wait: tuple[int, float] = (0, 0.0), count: int | None = None
) -> list[Any]:
    """Run ``commands`` (each packed by ``_pack``; ``count`` of them when a part holds several) in
    one MULTI/EXEC and one write; their replies.
    ``wait`` = (replicas, timeout s): then ``WAIT`` follows EXEC on the same connection (ha.py).

    What ``client.pipeline(transaction=True)`` does, at about half its client CPU and wall time
    (which decides the speed of a single ``enqueue``). Raises the first error reply (nothing was
    applied then unless the error came from EXEC's own results) and redis-py's connection errors;
    it tries once more on a fresh connection when a kept one turns out closed."""
    replicas, timeout = wait
    parts = [_MULTI, *commands, _EXEC]
    if replicas:
        parts.append(_pack(("WAIT", replicas, int(timeout * 1000))))
    payload = b"".join(parts)
    n = len(commands) if count is None else count
    held = _held(client.connection_pool)
    try:
        replies, acked = _send(held.conn, payload, n, timeout if replicas else None)
    except RedisConnectionError:  # not a timeout: the push may have been applied then
        if held.fresh:
            raise
        conn = _held(client.connection_pool, renew=True).conn
        replies, acked = _send(conn, payload, n, timeout if replicas else None)
    if replies is None:
        raise ResponseError("transaction discarded")
    for reply in replies:
        if isinstance(reply, ResponseError):
            raise reply
    if replicas:
        ha.check_replicated(int(acked), replicas, timeout)
    return list(replies)


def _send(conn: Any, payload: bytes, n: int, wait: float | None) -> tuple[Any, Any]:
    """(EXEC's replies, WAIT's reply or None) of a payload sent as one write (``wait``: WAIT's timeout)."""
    try:
        _write(conn, payload)
        # MULTI's +OK and the +QUEUED replies straight from the parser: the connection's wrapper (error
        # text, health check stamp) costs more than the parsing, once per command. Redis answers a
        # whole payload in one write: after the first reply the others are in the parser's reader,
        # taken with its ``gets`` (RESP2: inside MULTI a reply is +QUEUED or an error; anything
        # else means "not read yet", and the parser reads it).
        parser = getattr(conn, "_parser", conn)
        reply = parser.read_response()
        if isinstance(reply, ResponseError):
            raise reply
        gets = _reader_gets(conn, parser)
        for _ in range(n):
            reply = gets() if gets is not None else None
            if type(reply) is not bytes and type(reply) is not str:
                if not isinstance(reply, ResponseError):
                    reply = parser.read_response()
                if isinstance(reply, ResponseError):
                    raise reply
        replies = conn.read_response()
        return replies, conn.read_response(timeout=ha.wait_deadline(wait)) if wait is not None else None
    except OSError as exc:  # from the parser's own socket read, as the connection would raise it
        conn.disconnect()
        error = RedisTimeoutError if isinstance(exc, TimeoutError) else RedisConnectionError
        raise error(f"Error while reading from Redis: {exc}") from exc
    except BaseException:
        conn.disconnect()  # a half-read reply stream must not be reused
        raise


def _write(conn: Any, payload: bytes) -> None:
    """``conn.send_packed_command([payload])``; on a plain TCP or Unix socket (not TLS) one
    ``write`` on its descriptor: Python's ``sendall`` on a socket with a timeout polls before it
    sends (a system call per push). The rest, if the kernel took part, goes by ``sendall``."""
    if type(conn).send_packed_command is not _SEND_PACKED:
        conn.send_packed_command([payload])
        return
    conn.check_health()  # what send_packed_command does first (a PING when one is due; it may reconnect)
    sock = getattr(conn, "_sock", None)
    if type(sock) is not socket.socket:  # not connected (send_packed_command connects), or TLS
        conn.send_packed_command([payload], check_health=False)
        return
    try:
        sent = os.write(sock.fileno(), payload)
    except BlockingIOError:  # the send buffer is full: sendall waits for room (with the timeout)
        sent = 0
    if sent < len(payload):
        sock.sendall(memoryview(payload)[sent:])


_SEND_PACKED = AbstractConnection.send_packed_command


def _reader_gets(conn: Any, parser: Any) -> Callable[[], Any] | None:
    """The ``gets`` of a RESP2 connection's hiredis reader (what its parser's ``read_response``
    calls, without the rest), or None."""
    if getattr(conn, "protocol", 2) not in (2, "2", None):
        return None  # RESP3: push messages may come between replies; only the parser knows them
    return getattr(getattr(parser, "_reader", None), "gets", None)


class _Held:
    """A pool connection one thread keeps between pushes (checking one out costs ~5 µs: a lock and
    a poll() per call, a tenth of a single ``enqueue``); back to its pool when the thread ends."""

    __slots__ = ("conn", "fresh", "pid", "pool")

    def __init__(self, pool: Any) -> None:
        self.pool, self.pid, self.fresh = pool, os.getpid(), True
        self.conn = pool.get_connection()

    def __del__(self) -> None:
        if self.pid == os.getpid():
            with contextlib.suppress(Exception):
                self.pool.release(self.conn)


def _held(pool: Any, renew: bool = False) -> _Held:
    held: _Held | None = getattr(_local, "held", None)
    if held is None or renew or held.pool is not pool:
        held = _local.held = _Held(pool)  # the previous one goes back to its pool
        return held
    held.fresh = False
    return held


def _forked() -> None:
    """In a forked child: the parent's kept connections are not the child's to use (a getpid per
    push noticed that before); dropped without going back to the pool (``_Held.__del__``)."""
    global _local
    _local = threading.local()


os.register_at_fork(after_in_child=_forked)
