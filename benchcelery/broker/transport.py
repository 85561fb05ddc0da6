"""kombu's Redis transport, with the delivery guarantee of delivery.py and two speed changes.

1. **Atomic fetch with leases** (delivery.py). A worker takes a message and parks it in flight in
   one Lua script (stock kombu pops with BRPOP and parks in a second command, so a process killed
   between the two loses the message). Each taken message holds a lease that a thread of the
   worker renews while it holds it; acks and restores are fenced by the taker's owner token; a
   message whose lease lapsed is put back by any live worker or ``bench schedule``. This replaces
   kombu's visibility timeout (which re-delivers live jobs once it passes, and recovers jobs of
   dead workers only after it passes).
2. **No polling when idle, one round trip per job when busy.** An idle worker blocks on the
   queues' ``wake`` lists (every push adds a token); once a fetch found a job, the next poll is the
   fetch script itself, sent on the poll connection, until a fetch finds nothing.
3. **One redis-py client per channel** (stock kombu builds one per operation: ~15 % of a worker's
   CPU, reference/peer-performance.md).
4. **Per-site pending counters**: every push adds one to ``pending:<queue>`` (field = the job's
   site) in the same MULTI, fetch subtracts one, restore and recovery add it back, so
   ``show-pending-jobs`` answers from a hash (jobs/inspect.py checks them against LLEN).

Every element a queue can hold that is not a valid message (not JSON, not an object, missing
fields, a body that does not decode) is recorded in the failed-job registry with its raw text and
removed; it never reaches Celery, so it can never stop a worker.
"""

from __future__ import annotations

import base64
import binascii
import logging
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from time import monotonic
from typing import Any

import redis
from hiredis import pack_command
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps, loads

from benchcelery.bench.keys import UNKNOWN_SITE, Keys
from benchcelery.broker.delivery import DEFAULT_LEASE, Delivery, LeaseKeeper, Taken, new_token
from benchcelery.store.durable import execute_push

logger = logging.getLogger("benchcelery.broker.delivery")

OWNER = ""  # the worker's name, set by `bench worker` (delivery.new_token: who holds a job)
IDLE_FETCH_EVERY = 5  # BRPOP timeouts (1 s each) between fetches of an idle worker
_holders: weakref.WeakSet[Channel] = weakref.WeakSet()
_keeper: LeaseKeeper | None = None


def _site(message: Any) -> str:
    try:
        return str(message["headers"].get("site") or UNKNOWN_SITE)
    except (KeyError, TypeError, AttributeError):
        return UNKNOWN_SITE


def _worker_state() -> Any:
    """celery.worker.state, imported on first use (this module loads outside workers too)."""
    global _state
    if _state is None:
        from celery.worker import state

        _state = state
    return _state


_state: Any = None


def _running_tags() -> set[str]:
    """Delivery tags of the jobs this worker process is running now."""
    state = _worker_state()
    return {r.message.delivery_tag for r in list(state.active_requests) if getattr(r, "message", None) is not None}


def _shutting_down() -> bool:
    state = _worker_state()
    return state.should_stop is not None or state.should_terminate is not None


def _packed(commands: list[Any]) -> list[bytes]:
    """``commands`` in Redis's protocol, in one buffer for ``send_packed_command``: the bytes
    redis-py's ``pack_commands`` makes (its packer is hiredis's ``pack_command`` too), without its
    per-argument Python work on the write a busy worker sends for every job (acks, metrics and
    the next fetch)."""
    return [b"".join([pack_command(tuple(command)) for command in commands])]


class QoS(kombu_redis.QoS):
    """Prefetch accounting in memory; Redis state is kept by the delivery scripts."""

    def append(self, message: Any, delivery_tag: str) -> None:
        virtual.QoS.append(self, message, delivery_tag)  # the fetch script parked it already

    def ack(self, delivery_tag: str) -> None:
        self.channel.finish(delivery_tag)
        virtual.QoS.ack(self, delivery_tag)

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        if requeue:
            self.channel.give_back(delivery_tag, front=False)
        else:
            self.channel.finish(delivery_tag)
        virtual.QoS.ack(self, delivery_tag)

    def put_back(self, delivery_tag: str) -> None:
        """A job held ahead that will not run here (worker/lookahead.py): next in its queue again
        (or, when Redis cannot be reached now, when its lease lapses)."""
        try:
            self.channel.give_back(delivery_tag, front=True)
        finally:
            virtual.QoS.ack(self, delivery_tag)

    def restore_unacked(self, client: Any = None) -> list[Any]:
        """Give back the jobs this channel took that will not run here: every one when the worker
        shuts down (prefetched ones; running ones have finished by then, or a cold shutdown stopped
        them), and when the connection was lost, those Celery dropped (reserved, not yet running).
        Running jobs keep their leases (renewed over a new connection) and are acknowledged when
        they finish."""
        errors: list[Any] = []
        delivered: list[str] = list(self._delivered or {})
        keep = set() if _shutting_down() else _running_tags()
        for tag in delivered:
            if tag in keep:
                continue
            try:
                self.channel.give_back(tag, front=True)
            except Exception as exc:  # Redis down: the lease brings it back
                errors.append((exc, tag))
        if self._delivered is not None:
            self._delivered.clear()
        return errors

    def restore_visible(self, *args: Any, **kwargs: Any) -> None:
        """kombu's visibility-timeout sweep: replaced by leases (delivery.LeaseKeeper)."""


class Channel(kombu_redis.Channel):
    QoS = QoS
    job_lease = DEFAULT_LEASE
    from_transport_options = (*kombu_redis.Channel.from_transport_options, "job_lease")  # type: ignore[assignment]
    _shared_client: Any = None
    _delivery: Delivery | None = None
    _delivery_pool: Any = None
    _poll_fetch = False  # the outstanding poll command is the fetch script (not BRPOP)
    _poll_plain = False  # ... is kombu's own BRPOP (remote-control replies, which are not jobs)
    _expect_work = False
    _idle_timeouts = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._tokens: dict[str, str] = {}
        self._acks: list[tuple[str, str]] = []  # finished jobs whose ack goes with the next poll
        self._acks_sent: list[tuple[str, str]] = []  # ... went with the outstanding poll
        self._notes: list[tuple[Any, ...]] = []  # commands without replies that matter (metrics)
        self._notes_sent = 0
        self._fetch_queues: list[str] = []
        self._fetch_token = ""
        super().__init__(*args, **kwargs)
        self.keys = Keys.from_prefix(self.global_keyprefix or "")

    # --- clients ---
    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        if client:
            yield client
            return
        shared = self._shared_client
        if shared is None or shared.connection_pool is not self._pool or self._pool is None:
            shared = self._shared_client = self._create_client()
        yield shared

    @property
    def delivery(self) -> Delivery:
        """The delivery scripts on an unprefixed client of this channel's pool (kept after close,
        so jobs still running when the connection was lost can renew and acknowledge)."""
        pool = self._pool if self._pool is not None else self._delivery_pool
        if self._delivery is None or pool is not self._delivery_pool:
            pool = self.pool
            self._delivery = Delivery(redis.Redis(connection_pool=pool), self.keys, self.job_lease)
            self._delivery_pool = pool
        return self._delivery

    def counts_key(self, queue: str) -> str:
        return self.keys.pending_counts(queue)

    # --- producing ---
    def _put(self, queue: str, message: Any, **kwargs: Any) -> None:
        if queue.endswith(".pidbox"):  # remote-control replies: not jobs, not counted
            return super()._put(queue, message, **kwargs)
        key = self._q_for_pri(queue, self._get_message_priority(message, reverse=False))
        counts, site = self.counts_key(queue), _site(message)
        # kombu's client prefixes LPUSH keys itself (not HINCRBY's): the wake list by its bare name.
        wake = self.keys.wake(queue).removeprefix(self.global_keyprefix or "")
        batch = kwargs.pop("_publish_batch", None)
        if batch is not None:
            batch.add("lpush", key, dumps(message))
            batch.add("hincrby", counts, site, 1)
            batch.add("lpush", wake, "")
            return
        with self.conn_or_acquire() as client, client.pipeline() as pipe:
            pipe.lpush(key, dumps(message)).hincrby(counts, site, 1).lpush(wake, "")
            execute_push(pipe, self.connection.client.transport_options)  # WAIT for replicas when configured (ha.py)

    def _purge(self, queue: str) -> int:
        size = super()._purge(queue)
        self.delivery.r.delete(self.counts_key(queue), self.keys.wake(queue))  # full names: unprefixed client
        return int(size)

    # --- consuming ---
    def basic_consume(self, queue: str, *args: Any, **kwargs: Any) -> Any:
        _start_keeper(self)
        return super().basic_consume(queue, *args, **kwargs)

    def _brpop_start(self, timeout: float | None = None) -> None:
        self._poll_plain = all(q.endswith(".pidbox") for q in self.active_queues)
        if self._poll_plain:  # `celery inspect`/`control` replies: read and drop, as kombu does
            self.flush_acks()
            return super()._brpop_start(timeout)
        queues = self._queue_cycle.consume(len(self.active_queues))
        if not queues:
            self.flush_acks()
            return
        self._fetch_queues = list(queues)
        connection = self.client.connection
        if self._expect_work:
            self._fetch_token = new_token(OWNER)
            script = self.delivery.fetch_command(self._fetch_queues, self._fetch_token)
            self._poll_fetch = True
            command = ["EVALSHA", *script]
        else:
            # Idle from here on: what waits is applied now, not carried by a blocking BRPOP (whose
            # socket would turn readable with the acks' replies, and _brpop_read would then wait in
            # the BRPOP for up to its timeout with the whole event loop stopped).
            self.flush_acks()
            self._poll_fetch = False
            command = [
                "BRPOP",
                *(self.keys.wake(q) for q in queues),
                self.brpop_timeout if timeout is None else timeout,
            ]
        self._in_poll = connection
        self._brpop_sent_at = monotonic()  # type: ignore[assignment]
        if self._acks or self._notes:
            # The acks of the jobs that just finished (and their metrics) ride in the same write as
            # the fetch (their replies come first): one round trip per job instead of two or three.
            notes, self._notes = self._notes, []
            self._notes_sent = len(notes)
            self._acks_sent, self._acks = self._acks, []
            acks = [self.delivery.ack_command(tag, token) for tag, token in self._acks_sent]
            try:
                connection.send_packed_command(_packed([*notes, *acks, command]))
            except BaseException:  # not sent: the acks wait for the next poll (or the lease thread)
                self._acks[:0], self._acks_sent, self._notes_sent = self._acks_sent, [], 0
                raise
        else:
            connection.send_packed_command(_packed([command]))

    def _brpop_read(self, **options: Any) -> bool:
        if self._poll_plain:
            return bool(super()._brpop_read(**options))
        taken: Taken | None = None
        try:
            connection = self.client.connection
            self._read_acks(connection, **options)
            try:
                reply = self.client.parse_response(connection, "EVALSHA" if self._poll_fetch else "BRPOP", **options)
            except self.connection_errors:
                connection.disconnect()
                raise
            except redis.exceptions.NoScriptError:  # Redis restarted and lost its scripts
                self._poll_fetch, reply = False, None
            except self.ResponseError as exc:  # e.g. OOM under noeviction: wait, then try again
                logger.warning("Could not take a job: %s", exc)
                self._poll_fetch, reply = False, None
            if self._poll_fetch:
                taken = self.delivery.taken(reply)
                token = self._fetch_token
                if taken is not None and self._closing:  # the worker stops: not ours to run
                    self.delivery.restore(taken.tag, token)
                    taken = None
            elif self._closing or (reply is None and self._skip_idle_fetch()):
                taken = None
            else:  # woken by a push (or every IDLE_FETCH_EVERY timeouts): take a job, if any
                token = new_token(OWNER)
                try:
                    taken = self.delivery.fetch(self._fetch_queues, token)
                except self.ResponseError as exc:
                    logger.warning("Could not take a job: %s", exc)
                    taken = None
        finally:
            self._in_poll = None  # type: ignore[assignment]
            self._poll_fetch = False
            self._flush_brpop_reauth()
        self._expect_work = taken is not None
        if taken is None:
            raise kombu_redis.Empty()
        self._queue_cycle.rotate(taken.queue)
        self._deliver_taken(taken, token)
        return True

    def expects_work(self) -> bool:
        """Whether the last fetch took a job: the next poll is a fetch again (burst.py counts that as
        not idle). False once a fetch found every queue empty, and on a new channel."""
        return self._expect_work

    def _skip_idle_fetch(self) -> bool:
        """After a BRPOP that timed out (no wake token), fetch only every IDLE_FETCH_EVERY times:
        every push of ours leaves a token, so only a message pushed by another tool (by hand, plain
        kombu) waits that long; an idle worker costs ~3 Redis commands a second instead of ~19."""
        self._idle_timeouts += 1
        return self._idle_timeouts % IDLE_FETCH_EVERY != 0

    def _get(self, queue: str, timeout: Any = None) -> Any:
        """basic_get: the same atomic take as consuming."""
        token = new_token(OWNER)
        taken = self.delivery.fetch([queue], token)
        if taken is None:
            raise kombu_redis.Empty()
        message = self._envelope(taken, token)
        if message is None:
            raise kombu_redis.Empty()
        return message

    def _deliver_taken(self, taken: Taken, token: str) -> None:
        message = self._envelope(taken, token)
        if message is not None:
            self.connection._deliver(message, taken.queue)

    def _envelope(self, taken: Taken, token: str) -> dict[str, Any] | None:
        """The message, ready for kombu, owned by ``token``; None (recorded and removed) if invalid."""
        try:
            message = loads(bytes_to_str(taken.raw))
            _check_envelope(message)
        except (ValueError, TypeError, KeyError, binascii.Error) as exc:
            _record_malformed(taken, exc)
            self.delivery.ack(taken.tag, token)
            return None
        properties = message["properties"]
        properties["delivery_tag"] = taken.tag
        info = properties.setdefault("delivery_info", {})
        info["redelivered"] = taken.lapses  # jobs/execute.py fails a job whose workers keep dying
        self._tokens[taken.tag] = token
        return message

    # --- finishing (called by QoS; fenced by the owner token) ---
    def held(self) -> dict[str, str]:
        """What the lease thread renews: running jobs and finished ones whose ack has not been
        applied yet. On a closed channel (its connection was lost) those acks are retried here."""
        if self.closed and (self._acks or self._acks_sent):
            self.flush_acks()
        return {**dict(self._tokens), **dict(self._acks_sent), **dict(self._acks)}

    def lost(self, tags: list[str]) -> None:
        for tag in tags:
            if self._tokens.get(tag):
                logger.error(
                    "The lease of job %s lapsed while this worker held it (the worker was stalled or cut off "
                    "from Redis): it was put back in its queue and may run elsewhere too",
                    tag,
                )

    def finish(self, tag: str) -> None:
        token = self._tokens.pop(tag, None)
        if not token:
            return
        if self._in_poll is None and not self._closing and not _shutting_down() and _in_main_thread():
            # In the event loop, with the job's slot now free: the next poll starts right away and
            # carries this ack (_brpop_start). Anything that ends the loop flushes it (close).
            self._acks.append((tag, token))
            return
        self._acked(tag, self.delivery.ack(tag, token))

    def _acked(self, tag: str, done: bool) -> None:
        if not done:
            logger.error(
                "Job %s finished after its lease had lapsed and it was put back in its queue "
                "(counted in stale_acks; doctor shows it)",
                tag,
            )

    def note(self, commands: list[tuple[Any, ...]]) -> None:
        """Commands whose replies do not matter (job metrics): sent with the next poll when one
        follows (as acks are), else now."""
        if self._in_poll is None and not self._closing and not _shutting_down() and _in_main_thread():
            self._notes += commands
            return
        self._send_notes(commands)

    def _send_notes(self, commands: list[tuple[Any, ...]]) -> None:
        if commands:
            with self.delivery.r.pipeline(transaction=False) as pipe:  # unprefixed: full key names
                for command in commands:
                    pipe.execute_command(*command)
                pipe.execute(raise_on_error=False)

    def flush_acks(self) -> None:
        """Send the acks (and metrics) still waiting for a poll, now (one round trip each)."""
        if self._acks_sent and self._in_poll is None:  # sent with a poll whose replies never came
            self._acks[:0], self._acks_sent = self._acks_sent, []
        notes, self._notes = self._notes, []
        self._send_notes(notes)
        while self._acks:
            tag, token = self._acks[0]
            done = self.delivery.ack(tag, token)  # raises while Redis is away: kept for the next try
            self._acks.pop(0)
            self._acked(tag, done)

    def _read_acks(self, connection: Any, **options: Any) -> None:
        """Read the replies of the acks sent with the poll; an ack whose reply was lost is sent again."""
        for _ in range(self._notes_sent):
            self._notes_sent -= 1
            try:
                connection.read_response()
            except redis.exceptions.ResponseError as exc:
                logger.warning("Could not update job metrics: %s", exc)
        sent, self._acks_sent = self._acks_sent, []
        for i, (tag, token) in enumerate(sent):
            try:
                reply = self.client.parse_response(connection, "EVALSHA", **options)
            except redis.exceptions.ResponseError:  # NoScriptError (Redis restarted), OOM, ...
                self._acked(tag, self.delivery.ack(tag, token))
            except BaseException:
                self._acks[:0] = sent[i:]
                raise
            else:
                self._acked(tag, Delivery.acked(reply))

    def close(self) -> None:
        try:
            self.flush_acks()
        except Exception as exc:  # Redis unreachable: the lease thread keeps trying (held())
            logger.warning("Could not acknowledge %d finished job(s) yet: %s", len(self._acks), exc)
        if not self.held():  # nothing left to renew: the lease thread forgets it (it has no pool now)
            _holders.discard(self)
        super().close()

    def give_back(self, tag: str, front: bool = True) -> None:
        token = self._tokens.pop(tag, None)
        if token:
            self.delivery.restore(tag, token, front=front)

    def _restore(self, message: Any, leftmost: bool = False) -> None:
        self.give_back(message.delivery_tag, front=not leftmost)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _check_envelope(message: Any) -> None:
    """Raise ValueError/KeyError/binascii.Error unless ``message`` is a kombu envelope kombu and
    Celery can take apart without failing."""
    if not isinstance(message, dict):
        raise ValueError(f"a message is a JSON object, not {type(message).__name__}")
    properties, headers, body = message["properties"], message.get("headers"), message.get("body", "")
    if not isinstance(properties, dict) or not isinstance(headers, dict | None):
        raise ValueError("'properties' and 'headers' must be objects")
    if not isinstance(properties.get("delivery_info", {}), dict) or not isinstance(body, str):
        raise ValueError("'delivery_info' must be an object and 'body' a string")
    if properties.get("body_encoding") == "base64":
        base64.b64decode(body, validate=True)


def _record_malformed(taken: Taken, exc: Exception) -> None:
    from benchcelery.jobs.execute import record_malformed

    record_malformed(taken.queue, taken.raw, f"Malformed message: {type(exc).__name__}: {exc}", taken.tag)


def _start_keeper(channel: Channel) -> None:
    global _keeper
    _holders.add(channel)
    if _keeper is None or not _keeper.is_alive():
        _keeper = LeaseKeeper(_holders, channel.job_lease)
        _keeper.start()


class Transport(kombu_redis.Transport):
    Channel = Channel
    # Idle workers block on the wake lists for this long between fetches (a message pushed
    # without a wake token, by hand or by another tool, waits at most this long).
    brpop_timeout = 1
