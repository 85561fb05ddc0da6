"""Celery messages built directly, and the one place that pushes them (``enqueue`` and
``enqueue_many`` both come here).

Going through ``apply_async`` costs far more client CPU per job (router, producer, kombu's
publish, ``saferepr``, a Redis client per call) than building the same envelope here.
A push is one MULTI: one LPUSH per list (each site has its own lists in a queue), one HINCRBY per
(queue, site) for the pending counters and one for the history's enqueued count (history.py), a
ZADD NX marking the site as one with waiting jobs (so workers give it its turn, fetch.lua), wake
tokens for idle workers (as transport.py's ``_put`` does), and the "queued" status key of jobs
enqueued with an explicit id, so a single ``enqueue`` is one Redis round trip. The envelope is
Celery's protocol 2 exactly as kombu's Redis transport stores it (tests compare it field by field
with one made by ``apply_async`` given the same options). Nothing here imports Celery, and kombu
only when the job's arguments need its JSON encoder, so ``bench enqueue`` stays a light command.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from benchcelery.errors import ValidationError
from benchcelery.jobs import history
from benchcelery.jobs.registry import QUEUED
from benchcelery.store import durable as ha

if TYPE_CHECKING:
    import redis

    from benchcelery.bench.keys import Keys
    from benchcelery.runtime import Runtime

BATCH = 1000
WAKE_TOKENS = 64  # at most this many wake tokens per queue and batch (delivery.py)
REPR_MAXSIZE = 1024  # Celery's kwargsrepr_maxsize
# The body's embed part and the envelope's constant parts, as Celery writes them.
_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
_EMPTY_BODY = base64.b64encode(json.dumps([[], {}, _EMBED]).encode()).decode()
_STATIC_HEADERS = {"eta": None, "expires": None, "group": None, "group_index": None, "retries": 0}
_str = json.encoder.encode_basestring_ascii  # type: ignore[attr-defined]  # json.dumps' own
_NODE = uuid.uuid4().int  # kombu's get_node_id(): random per process
_local = threading.local()


def _plain_encoder() -> Callable[[Any], str] | None:
    """``json.dumps`` (default arguments) without building its C encoder for every call (a third of
    a header's encoding); None when the C encoder is missing. Circular data recurses until
    RecursionError instead of json's ValueError (``_dumps`` then says what is wrong)."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return None
    try:
        encoder = make(None, json.JSONEncoder().default, _str, None, ": ", ", ", False, False, True)
    except TypeError:  # another signature
        return None

    def encode(data: Any) -> str:
        return "".join(encoder(data, 0))

    return encode if encode({"a": [1, 2.5, None, True, "é"]}) == json.dumps({"a": [1, 2.5, None, True, "é"]}) else None


_encode_plain = _plain_encoder()


def _fast_dumps(data: Any) -> str:
    """``_dumps`` of data that is almost always plain (headers, job arguments), the common case first."""
    if _encode_plain is not None:
        try:
            return _encode_plain(data)
        except (TypeError, ValueError, RecursionError):
            pass  # not plain JSON, not finite, or circular: _dumps says which, or uses kombu's encoder
    return _dumps(data)


def _dumps(data: Any) -> str:
    """kombu's JSON (the same bytes as ``json.dumps`` for plain data; kombu's encoder only for the
    types it adds: datetime, Decimal, UUID, ...). Raises ValidationError when it cannot encode."""
    try:
        return json.dumps(data)
    except TypeError:
        pass
    except ValueError as exc:
        raise ValidationError(f"Job arguments must be JSON-serialisable: {exc}") from None
    except RecursionError:
        raise ValidationError("Job arguments are nested too deeply") from None
    from kombu.utils.json import dumps as kombu_dumps

    try:
        return kombu_dumps(data)
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"Job arguments must be JSON-serialisable: {exc}") from None
    except RecursionError:
        raise ValidationError("Job arguments are nested too deeply") from None


def kwargs_repr(kwargs: dict[str, Any]) -> str:
    """The ``kwargsrepr`` header (what Flower and ``celery inspect`` show): ``repr`` cut to Celery's
    1,024 characters. Job arguments are plain data, so Celery's ``saferepr`` (twenty times slower,
    a third of a small job's enqueue) has nothing to guard against; enqueue passes this to Celery
    the way ``apply_async(kwargsrepr=...)`` takes it. Raises ValidationError when ``repr`` fails."""
    try:
        text = repr(kwargs)
    except Exception as exc:  # RecursionError included
        raise ValidationError(f"Job arguments must be JSON-serialisable: {type(exc).__name__}") from None
    return text if len(text) <= REPR_MAXSIZE else f"{text[: REPR_MAXSIZE - 3]}..."


def sender() -> tuple[str, str]:
    """(origin, reply_to) of messages sent from this process and thread, as Celery names them:
    ``gen<pid>@<host>`` and the app's per-thread oid (``kombu.common.oid_from``)."""
    key = (os.getpid(), threading.get_ident())
    cached: tuple[tuple[int, int], tuple[str, str]] | None = getattr(_local, "sender", None)
    if cached is None or cached[0] != key:
        oid = str(uuid.uuid3(uuid.NAMESPACE_OID, f"{_NODE:x}-{key[0]:x}-{key[1]:x}-{id(_local):x}"))
        cached = (key, (f"gen{key[0]}@{socket.gethostname()}", oid))
        _local.sender = cached
    return cached[1]


# kombu's Redis message of a Celery protocol-2 task call, as json.dumps writes it, with the
# variable parts as %s (each already JSON). Celery's header order; ``headers`` (ours) come last.
_TEMPLATE = (
    '{"body": "%s", "content-encoding": "utf-8", "content-type": "application/json", '
    '"headers": {"lang": "py", "task": %s, "id": %s, "shadow": %s, "eta": null, "expires": null, '
    '"group": null, "group_index": null, "retries": 0, "timelimit": [%s, %s], "root_id": %s, '
    '"parent_id": null, "argsrepr": %s, "kwargsrepr": %s, "origin": %s, "ignore_result": true, '
    '"replaced_task_nesting": 0, "stamped_headers": null, "stamps": {}%s}, '
    '"properties": {"correlation_id": %s, "reply_to": %s, "delivery_mode": 2, '
    '"delivery_info": {"exchange": "", "routing_key": %s}, "priority": %s, "body_encoding": "base64", '
    '"delivery_tag": %s}}'
)


def envelope(options: dict[str, Any], task_name: str, origin: str, reply_to: str) -> str:
    """The JSON kombu would store for ``apply_async(**options)`` of ``task_name``: the same text
    ``json.dumps`` gives for Celery's message dict, written from a template (half the time).

    Raises ValidationError when the arguments are not JSON-serialisable."""
    job_id = _str(options["task_id"])
    kwargs = options["kwargs"]
    body = base64.b64encode(_fast_dumps([[], kwargs, _EMBED]).encode()).decode() if kwargs else _EMPTY_BODY
    ours = dict(options["headers"])
    # A header of ours that Celery also writes replaces Celery's value in place, as apply_async does.
    argsrepr = _str(ours.pop("argsrepr")) if "argsrepr" in ours else '"()"'
    kwargsrepr = _str(ours.pop("kwargsrepr")) if "kwargsrepr" in ours else _str(kwargs_repr(kwargs))
    rest = _fast_dumps(ours)
    return _TEMPLATE % (
        body,
        _str(task_name),
        job_id,
        _str(options["shadow"]),
        _number(options["time_limit"]),
        _number(options["soft_time_limit"]),
        job_id,
        argsrepr,
        kwargsrepr,
        _str(origin),
        ", " + rest[1:-1] if len(rest) > 2 else "",
        job_id,
        _str(reply_to),
        _str(options["queue"]),
        _number(options["priority"]),
        _str(uuid4_text()),
    )


def uuid4_text() -> str:
    """``str(uuid.uuid4())`` from one ``os.urandom`` call, without the UUID object (a third of the time)."""
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"


_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}  # RFC 4122's variant bits 10xx


def _number(value: Any) -> str:
    kind = type(value)
    if kind is int:
        return int.__repr__(value)
    if kind is float:
        return float.__repr__(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"expected a number, got {value!r}")
    return float.__repr__(value) if isinstance(value, float) else int.__repr__(value)


def push(rt: Runtime, all_options: list[dict[str, Any]], task_name: str, tracked: bool = False) -> None:
    """Build every envelope (so bad arguments write nothing), then push them in batches of BATCH;
    each batch is one MULTI: the messages, the per-site pending counters, wake tokens and, with
    ``tracked``, each job's "queued" status key (jobs enqueued with an explicit id, not claimed before).

    This is the only producer-side write of messages (transport.py's ``_put`` writes the same
    MULTI for messages Celery itself publishes)."""
    origin, reply_to = sender()
    keys = rt.keys
    built = [
        (keys.site_list(o["queue"], o["headers"]["site"], o["priority"]), o, envelope(o, task_name, origin, reply_to))
        for o in all_options
    ]
    status_ttl = rt.settings.number("rq_job_failure_ttl") if tracked else 0
    wait = ha.wait_settings(rt.settings.conf)  # durable enqueue: WAIT for replicas (ha.py)
    client = rt.redis
    for start in range(0, len(built), BATCH):
        commands, count = _batch(keys, built[start : start + BATCH], status_ttl)
        # With Sentinel, a lost master is waited for (enqueue_failover_wait), not an error at once.
        ha.through_failover(rt.settings, functools.partial(transaction, client, commands, wait, count))


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
        conn.send_packed_command([payload])
        # MULTI's +OK and the +QUEUED replies straight from the parser: the connection's wrapper (error
        # text, health check stamp) costs more than the parsing, once per command. Redis answers a
        # whole payload in one write.
        parser = getattr(conn, "_parser", conn)
        for _ in range(n + 1):
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
    if held is None or renew or held.pool is not pool or held.pid != os.getpid():
        if held is not None and held.pid != os.getpid():
            held.pid = -1  # a forked child: the parent's pool bookkeeping is not ours to touch
        held = _local.held = _Held(pool)  # the previous one goes back to its pool
        return held
    held.fresh = False
    return held
