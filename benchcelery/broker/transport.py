"""kombu's Redis transport, with the delivery guarantee of delivery.py and the changes below.

1. **Atomic fetch with leases** (delivery.py). A worker takes a message and parks it in flight in
   one Lua script (stock kombu pops with BRPOP and parks in a second command, so a process killed
   between the two loses the message). Each taken message holds a lease that a thread of the
   worker renews while it holds it; acks and restores are fenced by the taker's owner token; a
   message whose lease lapsed is put back by any live worker or ``bench schedule``. This replaces
   kombu's visibility timeout (which re-delivers live jobs once it passes, and recovers jobs of
   dead workers only after it passes).
2. **No polling when idle, one round trip per job (or batch of short jobs) when busy** (poll.py).
   An idle worker blocks on the queues' ``wake`` lists (every push adds a token); once a fetch
   found a job, the next poll is the fetch script itself, sent on the poll connection, until a
   fetch finds nothing; the acks of the jobs that finished meanwhile ride in the same write
   (acks.py).
3. **One redis-py client per channel** (stock kombu builds one per operation).
4. **Per-site pending counters**: every push adds one to ``pending:<queue>`` (field = the job's
   site) in the same MULTI, fetch subtracts one, restore and recovery add it back, so
   ``show-pending-jobs`` answers from a hash (jobs/inspect.py checks them against LLEN).
5. **Sites take turns** (fetch.lua; the lists: sitelists.py): a push goes to its site's list
   (``q:<queue>:<site>``) and marks the site in ``sites:<queue>`` in the same MULTI; kombu's own
   per-queue lists receive nothing from us. What other tools push there (plain kombu, a bench
   upgraded from the one-list layout) is moved to the sites' lists when a worker starts consuming
   the queue and at every idle fetch (adopt.lua). ``_size`` (queue_declare's message count) and
   ``_purge`` (``celery purge``) count and delete both layouts. Flower reads LLEN of kombu's lists
   itself: it shows 0 waiting for our queues (bench show-pending-jobs, the dashboard and ``bench
   metrics`` count them).

Every element a queue can hold that is not a valid message (not JSON, not an object, missing
fields, a body that does not decode) is recorded in the failed-job registry with its raw text and
removed (intake.py); it never reaches Celery, so it can never stop a worker. A message a worker
fails on anyway (an exception while kombu or Celery take it) counts as a redelivery, like a lapsed
lease; past ``max_redeliveries`` it is recorded as failed at its next fetch instead of being handed
out again.

What the transport needs from the layers above it (recording a malformed message, the worker's
running jobs and whether it is stopping) it gets through ``hooks.py``; this package imports
neither the job engine nor Celery's worker. The channel's parts are mixins, each in its module:
the site lists (sitelists.py), the poll (poll.py), the intake (intake.py) and the hold on taken jobs
(ownership.py); this module keeps the clients, the finishing of jobs (acks, retries, give-backs,
close) and the lease thread.
"""

from __future__ import annotations

import logging
import select
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from time import monotonic
from typing import Any

import redis
from kombu.transport import redis as kombu_redis

from benchcelery.bench.config import DEFAULTS
from benchcelery.bench.keys import Keys
from benchcelery.broker.acks import PendingAcks
from benchcelery.broker.acks import report as report_ack
from benchcelery.broker.delayed import Delayed, Entry
from benchcelery.broker.delivery import DEFAULT_LEASE, Delivery, LeaseKeeper, new_token
from benchcelery.broker.hooks import hooks
from benchcelery.broker.intake import Intake, JobMessage
from benchcelery.broker.ownership import Ownership
from benchcelery.broker.poll import Poll
from benchcelery.broker.pollcycle import register_quietly
from benchcelery.broker.qos import QoS
from benchcelery.broker.sitelists import SiteLists
from benchcelery.store.connection import SOCKET_TIMEOUT, keepalive_options

logger = logging.getLogger("benchcelery.broker.delivery")

OWNER = ""  # the worker's name, set by `bench worker` (delivery.new_token: who holds a job)
_holders: weakref.WeakSet[Channel] = weakref.WeakSet()
# Closed channels that still hold jobs or unapplied acks: kept alive until those are settled (once
# Celery replaced a lost connection nothing else refers to the old channel, and the weak set alone
# would let its leases lapse: a finished job would then run again).
_closed_holding: set[Channel] = set()
_keeper: LeaseKeeper | None = None
_loop_turn: float | None = None  # monotonic time of the event loop's last turn (None: no event loop)
# The stamping timer entry of each event loop. It is registered while the consumer connects, so
# Celery cancels it with the connection's other entries when that connection is lost
# (celery.worker.loops.asynloop); it is registered again by the reconnect's register_with_event_loop.
_turning: dict[int, Any] = {}
TURN_EVERY = 1.0


class Channel(Intake, Ownership, SiteLists, Poll, kombu_redis.Channel):
    QoS = QoS
    Message = JobMessage
    job_lease = DEFAULT_LEASE
    max_redeliveries = DEFAULTS["max_redeliveries"]
    from_transport_options = (  # type: ignore[assignment]
        *kombu_redis.Channel.from_transport_options,
        "job_lease",
        "max_redeliveries",
    )
    _shared_client: Any = None
    _delivery: Delivery | None = None
    _delivery_pool: Any = None
    # Every connection of the channel (poll, pushes, acks, the lease thread's) has a read timeout:
    # kombu's default is none, and a synchronous command on a path that drops packets without
    # closing the socket then blocks the event loop for good (no TERM, no health check runs).
    # The poll's BRPOP (1 s) is read only once its socket is readable, within this timeout. Its
    # connections keep redis-py's no-retry default (kombu and Celery reconnect themselves).
    socket_timeout = SOCKET_TIMEOUT  # type: ignore[assignment]
    socket_keepalive = True  # type: ignore[assignment]
    socket_keepalive_options = keepalive_options()  # type: ignore[assignment]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._tokens: dict[str, str] = {}
        # tag -> monotonic time until which its lease is surely ours (taken or renewed since)
        self._fresh: dict[str, float] = {}
        self._lost: set[str] = set()  # tags a renewal said are no longer ours (not renewed again)
        self._acks = PendingAcks(lambda: self.delivery)
        self._fetch_queues: list[str] = []
        self._fetch_token = ""
        self._on_ack: dict[str, tuple[Entry, float, str, int]] = {}  # retries scheduled by the ack
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

    def _new_token(self) -> str:
        return new_token(OWNER)

    def basic_consume(self, queue: str, *args: Any, **kwargs: Any) -> Any:
        _start_keeper(self)
        return super().basic_consume(queue, *args, **kwargs)  # SiteLists: adopts kombu's lists first

    # --- finishing (called by QoS; fenced by the owner token) ---
    def held(self) -> dict[str, str]:
        """What the lease thread renews: running jobs and finished ones whose ack has not been
        applied yet, except those a renewal found lost. On a closed channel (its connection was
        lost) those acks are retried here."""
        if (self._closing or self.closed) and self._acks.unapplied():
            # No poll carries them any more, and none is read: those sent with the last poll whose
            # replies never came (its connection dropped) go again too.
            self._acks.flush(polling=False)
        held = self._holding()
        if (self._closing or self.closed) and not held:
            _closed_holding.discard(self)
        return held

    def finish(self, tag: str) -> None:
        token = self._tokens.pop(tag, None)
        self._fresh.pop(tag, None)
        self._lost.discard(tag)
        if not token:
            return
        if tag in self._on_ack:  # a failed job with attempts left: its ack schedules the next one
            self._ack_retry(tag, token, *self._on_ack.pop(tag))
            return
        if self._can_defer():
            # In the event loop, with the job's slot now free: the next poll starts right away and
            # carries this ack (_brpop_start). Anything that ends the loop flushes it (close).
            self._acks.defer(tag, token)
            return
        try:
            report_ack(tag, self.delivery.ack(tag, token))
        except self.connection_errors as exc:  # kept (and its lease renewed) until it is applied
            logger.warning("Could not acknowledge job %s yet: %s", tag, exc)
            self._acks.defer(tag, token)

    # --- retries (delayed.py): the ack of a failed job with attempts left schedules the next one ---
    def schedule_on_ack(self, tag: str, entry: Entry, seconds: float, status: str, ttl: int) -> None:
        """Make the ack of ``tag`` schedule ``entry`` ``seconds`` from now, in the same step."""
        self._on_ack[tag] = (entry, seconds, status, ttl)

    def _ack_retry(self, tag: str, token: str, entry: Entry, seconds: float, status: str, ttl: int) -> None:
        try:
            done = Delayed(self.delivery.r, self.keys).ack_retry(tag, token, entry, seconds, status, ttl)
        except Exception as exc:  # Redis unreachable: the lease lapses and the job runs again
            logger.warning("Could not schedule the next attempt of job %s; it goes back by its lease: %s", tag, exc)
            return
        report_ack(tag, done)

    def note(self, commands: list[tuple[Any, ...]]) -> None:
        """Commands whose replies do not matter (job metrics): sent with the next poll when one
        follows (as acks are), else now."""
        if self._can_defer():
            self._acks.defer_notes(commands)
            return
        try:
            self._acks.send_notes(commands)
        except self.connection_errors as exc:  # metrics only: dropped rather than block the finish
            logger.warning("Could not update job metrics: %s", exc)

    def _can_defer(self) -> bool:
        """Whether a next poll will carry what finishes now: called in the event loop, no poll
        outstanding but a fetch (after its reply the next poll is a fetch again, which carries it,
        or a BRPOP, before which it is flushed), the channel and the worker not stopping."""
        return (
            (self._in_poll is None or self._poll_fetch)
            and not self._closing
            and not hooks.shutting_down()
            and _in_main_thread()
        )

    def flush_acks(self) -> None:
        """Send the acks (and metrics) still waiting for a poll, now (one round trip each)."""
        self._acks.flush(polling=self._in_poll is not None)

    _acks_seen = -1  # PendingAcks.rides when settle_acks last found acks waiting for a poll

    def settle_acks(self) -> None:
        """Called every so often in the event loop: acks that already waited for a poll at the last
        call, with none sent since (the jobs of a batch held behind a long one free no slot for a
        fetch, poll.py), are applied now."""
        waiting = bool(self._acks.waiting) and self._in_poll is None and not self._closing
        if waiting and self._acks_seen == self._acks.rides:
            try:
                self.flush_acks()
            except Exception as exc:  # kept (and renewed); the next poll or call tries again
                logger.warning("Could not acknowledge %d finished job(s) yet: %s", len(self._acks.waiting), exc)
        self._acks_seen = self._acks.rides if waiting else -1

    def close(self) -> None:
        self._closing = True
        self._drop_silent_poll()
        if self._in_poll:
            # Read the outstanding poll here, not in kombu's close: a connection error there (a
            # connection kombu dropped as stale, Redis gone) ended close before ``closed`` was set,
            # and a channel not closed never flushed the acks it still held (held()): renewed for
            # good (never settled), or run again once their leases lapsed. Acks whose replies are
            # not read wait again (PendingAcks.unread) and are flushed below or by the lease thread.
            try:
                self._brpop_read()
            except kombu_redis.Empty:
                pass
            except Exception as exc:
                logger.warning("Could not read the worker's last poll on close: %s", exc)
            finally:
                self._in_poll = None  # type: ignore[assignment]
        try:
            self.flush_acks()
        except Exception as exc:  # Redis unreachable: the lease thread keeps trying (held())
            logger.warning("Could not acknowledge %d finished job(s) yet: %s", len(self._acks.waiting), exc)
        if not self._holding():  # nothing left to renew: the lease thread forgets it (it has no pool now)
            _holders.discard(self)
        else:
            _closed_holding.add(self)
        super().close()

    def _drop_silent_poll(self) -> None:
        """Closing reads the outstanding poll's reply first; a live Redis sends it within the BRPOP
        timeout. One that has not come by then (plus a second) is not awaited for the full socket
        timeout: the connection is dropped, so a TERM during a network outage is not held up."""
        connection, sent = self._in_poll, self._brpop_sent_at
        sock = getattr(connection, "_sock", None) if connection else None
        if sock is None or sent is None:
            return
        wait = max(0.0, float(sent) + self.brpop_timeout + 1.0 - monotonic())
        if not select.select([sock], [], [], wait)[0]:
            logger.warning("Redis did not answer the worker's poll in time; dropping that connection")
            connection.disconnect()

    def give_back(self, tag: str, front: bool = True) -> None:
        token = self._tokens.pop(tag, None)
        self._fresh.pop(tag, None)
        self._lost.discard(tag)
        if token:
            try:
                self.delivery.restore(tag, token, front=front)
            except self.connection_errors as exc:  # not renewed from now on: back by its lease
                logger.warning("Could not put job %s back now (%s): it goes back when its lease lapses", tag, exc)

    def _restore(self, message: Any, leftmost: bool = False) -> None:
        self.give_back(message.delivery_tag, front=not leftmost)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _start_keeper(channel: Channel) -> None:
    global _keeper
    _holders.add(channel)
    if _keeper is None or not _keeper.is_alive():
        _keeper = LeaseKeeper(_holders, channel.job_lease, loop_turn=_last_turn, stopping=hooks.shutting_down)
        _keeper.start()


def _last_turn() -> float | None:
    """The event loop's last turn, for the lease thread; a job running in the loop's own thread
    (--pool solo) counts as one (hooks.inline_busy)."""
    busy = hooks.inline_busy()
    return _loop_turn if busy is None or _loop_turn is None else max(_loop_turn, busy)


def _turned() -> None:
    global _loop_turn
    _loop_turn = monotonic()


class Transport(kombu_redis.Transport):
    Channel = Channel
    # Idle workers block on the wake lists for this long between fetches (a message pushed
    # without a wake token, by hand or by another tool, waits at most this long).
    brpop_timeout = 1

    def register_with_event_loop(self, connection: Any, loop: Any) -> None:
        ticks = set(loop.on_tick)
        super().register_with_event_loop(connection, loop)
        register_quietly(self, loop, ticks)  # no failing epoll_ctl per turn (pollcycle.py)
        # Again after every reconnect: Celery cancelled the entry of the lost connection, and a loop
        # that stamps no more would look stalled to the lease thread 30 s later, which would then
        # stop renewing every job of this worker (they would run again elsewhere).
        previous = _turning.pop(id(loop), None)
        if previous is not None:  # still live (not cancelled): one entry per loop, not one per connect
            previous.cancel()
        _turned()
        _turning[id(loop)] = loop.call_repeatedly(TURN_EVERY, _turned)
