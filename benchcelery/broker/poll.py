"""The transport channel's poll: no polling when idle, one round trip per job (or batch) when busy.
An idle worker blocks on the queues' ``wake`` lists (every push adds a token), with the fetch
script sent right behind that BRPOP on the same connection: Redis runs the fetch as soon as the
BRPOP returns (woken by a push, or at its 1 s timeout), so a woken worker has its job in the same
round trip. Once a fetch found a job, the next poll is the fetch script itself, until a fetch
finds nothing. The acks of the jobs that finished meanwhile ride in that fetch (acks.py). A taken
job goes through the intake (intake.py) before kombu sees it. Mixed into ``transport.Channel``.

A busy worker leaves out of its fetches, for SKIP_EMPTY seconds, the queues its last fetches
found with no job to take (each costs the script a scan of its sites per job otherwise): a job
pushed on such a queue meanwhile waits up to that long (~50 ms) behind the worker's later queues,
the only departure from the queue order. It is never stranded: a fetch that takes nothing (of
the queues it was given) leaves the wake tokens of the queues it did not look at, so the worker's
BRPOP returns at once and fetches all its queues.

While its jobs are short (less than SHORT seconds each: the time between two fetches per job
finished meanwhile, whose acks the second carries), a busy worker's fetch takes up to ``batch``
jobs (BATCH for ``bench worker``, see ``take_batches``): the fetch's own cost (the script call,
the round trip, the poll's turn) is shared by them, and their acks ride together in the next
fetch. Each is leased and parked like a single take; sites and round_robin queues still take
turns job by job (fetch.lua). With ``--pool solo`` the jobs of a batch run one after the
other in this thread: what has not started once the worker stops, or BATCH_WAIT after the fetch,
goes back to the front of its queue."""

from __future__ import annotations

import logging
from time import monotonic
from typing import TYPE_CHECKING, Any

import redis
from hiredis import pack_command
from kombu.transport import redis as kombu_redis
from kombu.utils.scheduling import round_robin_cycle

from benchcelery.broker.delivery import Fetched
from benchcelery.broker.hooks import hooks

if TYPE_CHECKING:
    from benchcelery.bench.keys import Keys
    from benchcelery.broker.acks import PendingAcks
    from benchcelery.broker.delivery import Delivery, Taken

    _Base = kombu_redis.Channel
else:
    _Base = object

logger = logging.getLogger("benchcelery.broker.delivery")

IDLE_ADOPT_EVERY = 5  # BRPOP timeouts (1 s each) between an idle worker's looks at kombu's own lists
SKIP_EMPTY = 0.05  # s a busy worker's fetches leave out a queue found with no job to take
BATCH = 8  # most jobs a busy fetch of `bench worker` takes while its jobs are short
SHORT = 0.005  # s per job (between a busy worker's fetches) under which a fetch takes a batch
BATCH_WAIT = 0.25  # s after its fetch past which a solo worker gives back the rest of a batch


def take_batches(most: int) -> None:
    """Let a busy worker's fetches take up to ``most`` jobs while its jobs are short (the worker's
    consumer: BATCH for `bench worker`, 1 for a pool, whose free process takes the next job)."""
    Poll.batch = max(1, most)


def _packed(commands: list[Any]) -> list[bytes]:
    """``commands`` in Redis's protocol, in one buffer for ``send_packed_command``: the bytes
    redis-py's ``pack_commands`` makes (its packer is hiredis's ``pack_command`` too), without its
    per-argument Python work on the write a busy worker sends for every job (acks, metrics and
    the next fetch)."""
    return [b"".join([pack_command(tuple(command)) for command in commands])]


class Poll(_Base):
    _poll_fetch = False  # the outstanding poll command is the fetch script (not BRPOP)
    _poll_plain = False  # ... is kombu's own BRPOP (remote-control replies, which are not jobs)
    _idle_token: str | None = None  # the owner token of the fetch sent behind the idle BRPOP
    _expect_work = False
    _idle_timeouts = 0
    _retry_in: float | None = None  # s until a rate-limited job may start (fetch.lua's reply)
    _empty_until: dict[str, float] | None = None  # queue -> monotonic time until busy fetches skip it
    batch = 1  # most jobs a busy fetch takes (take_batches)
    _last_fetch: float | None = None  # monotonic time the last fetch was sent

    if TYPE_CHECKING:  # the channel's own (transport.Channel) and its other mixins'
        keys: Keys
        _acks: PendingAcks
        _fetch_queues: list[str]
        _fetch_token: str

        @property
        def delivery(self) -> Delivery: ...
        def _new_token(self) -> str: ...
        def flush_acks(self) -> None: ...
        def _adopt(self, queues: list[str]) -> int: ...
        def _envelope(self, taken: Taken, token: str) -> dict[str, Any] | None: ...
        def _count_crash(self, taken: Taken) -> None: ...

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
            self._fetch_queues = self._busy_queues(self._fetch_queues)
            self._fetch_token = self._new_token()
            riders: list[Any] = []
            acks: list[tuple[str, str]] = []
            if self._acks.to_send():  # the acks of the jobs that just finished ride in the fetch
                riders, acks = self._acks.ride()
            try:
                want = self._want(len(acks))
                rotate = want > 1 and type(self._queue_cycle).rotate is round_robin_cycle.rotate
                script = self.delivery.fetch_command(self._fetch_queues, self._fetch_token, acks, want, rotate)
            except BaseException:
                self._acks.not_sent()
                raise
            self._poll_fetch = True
            commands = [*riders, ["EVALSHA", *script]]
        else:
            # Idle from here on: what waits is applied now, not carried by a blocking BRPOP (whose
            # socket would turn readable with the acks' replies, and _brpop_read would then wait in
            # the BRPOP for up to its timeout with the whole event loop stopped).
            self.flush_acks()
            self._poll_fetch = False
            wait = self.brpop_timeout if timeout is None else timeout
            if self._retry_in is not None:  # a rate-limited job may start then: fetch again
                wait = max(0.01, min(wait, self._retry_in))
            self._idle_token = self._new_token()
            fetch = self.delivery.fetch_command(self._fetch_queues, self._idle_token, [])
            # The fetch waits behind the BRPOP in Redis, which runs it as soon as the BRPOP returns.
            commands = [["BRPOP", *(self.keys.wake(q) for q in queues), wait], ["EVALSHA", *fetch]]
        self._in_poll = connection
        self._brpop_sent_at = monotonic()  # type: ignore[assignment]
        try:
            connection.send_packed_command(_packed(commands))
        except BaseException:  # not sent: the acks wait for the next poll (or the lease thread)
            self._acks.not_sent()
            raise

    def _want(self, finished: int) -> int:
        """How many jobs the busy fetch sent now takes: ``batch`` while the jobs are short (the time
        since the last fetch, per job ``finished`` meanwhile (the acks it carries), under SHORT),
        else one: a fetch that carries no ack has seen no job end."""
        now, last = monotonic(), self._last_fetch
        self._last_fetch = now
        if self.batch == 1 or last is None or not finished:
            return 1
        return self.batch if (now - last) / finished < SHORT else 1

    def _busy_queues(self, queues: list[str]) -> list[str]:
        """``queues`` without those a fetch found with no job to take less than SKIP_EMPTY ago (all
        of them if that leaves none)."""
        until = self._empty_until
        if not until:
            return queues
        now = monotonic()
        busy = [q for q in queues if until.get(q, 0.0) <= now]
        return busy or queues

    def _found_empty(self, queues: list[str], passed: int) -> None:
        """Note the first ``passed`` of ``queues``, found by a fetch with no job to take (the next,
        if any, is the one it took from: no longer skipped)."""
        if self._empty_until is None:
            self._empty_until = {}
        until = monotonic() + SKIP_EMPTY
        for q in queues[:passed]:
            self._empty_until[q] = until
        if passed < len(queues):
            self._empty_until.pop(queues[passed], None)

    def _brpop_read(self, **options: Any) -> bool:
        if self._poll_plain:
            return bool(super()._brpop_read(**options))
        takes: list[Taken] = []
        idle: Fetched | None = None  # the reply of the fetch sent behind the idle BRPOP
        try:
            connection = self.client.connection
            try:
                self._acks.read_notes(connection)
                reply = self.client.parse_response(connection, "EVALSHA" if self._poll_fetch else "BRPOP", **options)
                if not self._poll_fetch:
                    idle = self._read_idle_fetch(connection)
            except self.connection_errors:
                self._acks.unread()  # the acks in the fetch go again
                connection.disconnect()
                raise
            except BaseException as exc:
                if not isinstance(exc, self.ResponseError):
                    self._acks.unread()
                    raise
                if not self._poll_fetch:  # the BRPOP itself was refused: the fetch's reply is not read
                    connection.disconnect()
                # The fetch did not run: its acks go with the ack script now. NoScriptError (Redis
                # restarted and lost its scripts): fetch again at once, the script loaded; else (OOM
                # under noeviction): log, and try again at the next poll.
                if not isinstance(exc, redis.exceptions.NoScriptError):
                    logger.warning("Could not take a job: %s", exc)
                    idle = Fetched([], None, 0, [])
                self._poll_fetch, reply = False, None
                self._acks.refused()
            if self._poll_fetch:
                fetched = self.delivery.fetched(reply)
                self._acks.applied(fetched.acks)
                self._found_empty(self._fetch_queues, fetched.passed)
                takes, self._retry_in = fetched.takes, fetched.retry_in
                if takes and self._closing:  # the worker stops: not ours to run
                    self._give_back_takes(takes)
                    takes = []
            elif self._closing:
                if idle is not None and idle.takes:
                    self._give_back_takes(idle.takes)
            else:  # the BRPOP returned (a push's wake token, or its timeout) and the fetch behind it ran
                takes = self._idle_takes(idle, woken=reply is not None)
        finally:
            self._in_poll = None  # type: ignore[assignment]
            self._poll_fetch = False
            self._flush_brpop_reauth()
        self._expect_work = bool(takes)
        if not takes:
            raise kombu_redis.Empty()
        for taken in takes:  # as the fetch did between its takes (round_robin)
            self._queue_cycle.rotate(taken.queue)
        self._deliver_takes(takes)
        return True

    def _read_idle_fetch(self, connection: Any) -> Fetched | None:
        """The reply of the fetch sent behind the idle BRPOP; None when it did not run because Redis
        had lost the script (NoScriptError: a restart, a failover), and no job when it was refused
        (OOM under noeviction: tried again at the next poll)."""
        try:
            return self.delivery.fetched(self.client.parse_response(connection, "EVALSHA"))
        except redis.exceptions.NoScriptError:
            return None
        except self.ResponseError as exc:
            logger.warning("Could not take a job: %s", exc)
            return Fetched([], None, 0, [])

    def _idle_takes(self, fetched: Fetched | None, woken: bool) -> list[Taken]:
        """The jobs an idle poll's fetch took (``fetched``; None: fetch again, the script loaded)."""
        # The token of the fetch that ran serves again only if it took nothing (adopt, below).
        token = (self._idle_token if fetched is not None else None) or self._new_token()
        self._idle_token = None
        self._last_fetch = monotonic()
        try:
            if fetched is None:
                fetched = self.delivery.fetch_result(self._fetch_queues, token)
            self._found_empty(self._fetch_queues, fetched.passed)
            # Nothing in the sites' lists: another tool's pushes (their wake tokens woke us, or
            # they left none) or the one-list layout may wait in kombu's lists; move them and fetch again.
            nothing = fetched.taken is None and fetched.retry_in is None
            if nothing and (woken or self._adopt_due()) and self._adopt(self._fetch_queues):
                fetched = self.delivery.fetch_result(self._fetch_queues, token)
        except self.ResponseError as exc:
            logger.warning("Could not take a job: %s", exc)
            return []
        self._retry_in = fetched.retry_in
        return fetched.takes

    def _deliver_takes(self, takes: list[Taken]) -> None:
        """Hand the jobs of one fetch to kombu, in order. A job that runs in this thread (--pool
        solo) ends before the next is handed over: the rest go back to the front of their queue
        once the worker stops, or BATCH_WAIT after the fetch, and when handing one over failed."""
        fetched_at = monotonic()
        for i, taken in enumerate(takes):
            if i and (self._closing or hooks.shutting_down() or monotonic() - fetched_at > BATCH_WAIT):
                self._give_back_takes(takes[i:])
                return
            try:
                self._deliver_taken(taken, taken.tag)
            except BaseException:
                self._give_back_takes(takes[i + 1 :])
                raise

    def _give_back_takes(self, takes: list[Taken]) -> None:
        """Put taken jobs that will not run here back at the front of their queue, in their order
        (those that cannot be now come back when their lease lapses: none of them is renewed)."""
        for taken in reversed(takes):
            try:
                self.delivery.restore(taken.tag, taken.tag)
            except Exception as exc:
                logger.warning("Could not put job %s back now (%s): it goes back when its lease lapses", taken.tag, exc)

    def _on_connection_disconnect(self, connection: Any) -> None:
        """A connection of this channel dropped (kombu's check of an overdue poll, a lost socket):
        if it carried the outstanding poll, that poll's replies never come, so the acks it carried
        go again with the next poll (a fetch read against acks it did not carry ended the worker)."""
        if connection is not None and connection is self._in_poll:
            self._acks.unread()
            self._poll_fetch = False
        super()._on_connection_disconnect(connection)

    def expects_work(self) -> bool:
        """Whether the last fetch took a job: the next poll is a fetch again (burst.py counts that as
        not idle). False once a fetch found every queue empty, and on a new channel."""
        return self._expect_work

    def _adopt_due(self) -> bool:
        """After a BRPOP that timed out (no wake token) and a fetch that found nothing, look at
        kombu's own lists only every IDLE_ADOPT_EVERY times: every push of ours leaves a token, so
        only a message pushed by another tool (by hand, plain kombu) waits that long."""
        self._idle_timeouts += 1
        return self._idle_timeouts % IDLE_ADOPT_EVERY == 0

    def _get(self, queue: str, timeout: Any = None) -> Any:
        """basic_get: the same atomic take as consuming."""
        token = self._new_token()
        taken = self.delivery.fetch([queue], token)
        if taken is None:
            raise kombu_redis.Empty()
        message = self._envelope(taken, token)
        if message is None:
            raise kombu_redis.Empty()
        return message

    def _deliver_taken(self, taken: Taken, token: str) -> None:
        message = self._envelope(taken, token)
        if message is None:
            return
        try:
            self.connection._deliver(message, taken.queue)
        except self.connection_errors:
            raise
        except Exception:
            # Whatever in kombu or Celery failed on this message ends the worker (Celery's
            # "Unrecoverable error", which gives the message back): count it against the message
            # as a lapsed lease would be, so it is failed, not handed out again, past the limit.
            self._count_crash(taken)
            raise
