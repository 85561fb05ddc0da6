"""The transport channel's poll: no polling when idle, one round trip per job (or batch) when busy.
An idle worker blocks on the queues' ``wake`` lists (every push adds a token) and fetches when
woken (or every IDLE_FETCH_EVERY timeouts, for what other tools pushed without a token); once a
fetch found a job, the next poll is the fetch script itself, sent on the poll connection, until a
fetch finds nothing. The acks of the jobs that finished meanwhile ride in that fetch (acks.py). A
taken job goes through the intake (intake.py) before kombu sees it. Mixed into
``transport.Channel``.

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

from benchcelery.broker.hooks import hooks

if TYPE_CHECKING:
    from benchcelery.bench.keys import Keys
    from benchcelery.broker.acks import PendingAcks
    from benchcelery.broker.delivery import Delivery, Taken

    _Base = kombu_redis.Channel
else:
    _Base = object

logger = logging.getLogger("benchcelery.broker.delivery")

IDLE_FETCH_EVERY = 5  # BRPOP timeouts (1 s each) between fetches of an idle worker
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
        riders: list[Any] = []
        if self._expect_work:
            self._fetch_queues = self._busy_queues(self._fetch_queues)
            self._fetch_token = self._new_token()
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
            command = ["EVALSHA", *script]
        else:
            # Idle from here on: what waits is applied now, not carried by a blocking BRPOP (whose
            # socket would turn readable with the acks' replies, and _brpop_read would then wait in
            # the BRPOP for up to its timeout with the whole event loop stopped).
            self.flush_acks()
            self._poll_fetch = False
            wait = self.brpop_timeout if timeout is None else timeout
            if self._retry_in is not None:  # a rate-limited job may start then: fetch again
                wait = max(0.01, min(wait, self._retry_in))
            command = ["BRPOP", *(self.keys.wake(q) for q in queues), wait]
        self._in_poll = connection
        self._brpop_sent_at = monotonic()  # type: ignore[assignment]
        try:
            connection.send_packed_command(_packed([*riders, command]))
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
        try:
            connection = self.client.connection
            try:
                self._acks.read_notes(connection)
                reply = self.client.parse_response(connection, "EVALSHA" if self._poll_fetch else "BRPOP", **options)
            except self.connection_errors:
                self._acks.unread()  # the acks in the fetch go again
                connection.disconnect()
                raise
            except BaseException as exc:
                if not isinstance(exc, self.ResponseError):
                    self._acks.unread()
                    raise
                # The fetch did not run (NoScriptError: Redis restarted and lost its scripts; OOM
                # under noeviction: wait, then try again): its acks go with the ack script now.
                if not isinstance(exc, redis.exceptions.NoScriptError):
                    logger.warning("Could not take a job: %s", exc)
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
            elif self._closing or (reply is None and self._skip_idle_fetch()):
                pass
            else:  # woken by a push (or every IDLE_FETCH_EVERY timeouts): take a job, if any
                token = self._new_token()
                self._last_fetch = monotonic()
                try:
                    fetched = self.delivery.fetch_result(self._fetch_queues, token)
                    self._found_empty(self._fetch_queues, fetched.passed)
                    # Nothing in the sites' lists: another tool's pushes (their wake tokens woke us)
                    # or the one-list layout may wait in kombu's lists; move them and fetch again.
                    if fetched.taken is None and fetched.retry_in is None and self._adopt(self._fetch_queues):
                        fetched = self.delivery.fetch_result(self._fetch_queues, token)
                    takes, self._retry_in = fetched.takes, fetched.retry_in
                except self.ResponseError as exc:
                    logger.warning("Could not take a job: %s", exc)
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

    def expects_work(self) -> bool:
        """Whether the last fetch took a job: the next poll is a fetch again (burst.py counts that as
        not idle). False once a fetch found every queue empty, and on a new channel."""
        return self._expect_work

    def _skip_idle_fetch(self) -> bool:
        """After a BRPOP that timed out (no wake token), fetch only every IDLE_FETCH_EVERY times:
        every push of ours leaves a token, so only a message pushed by another tool (by hand, plain
        kombu) waits that long, and an idle worker mostly waits in BRPOP instead of running the
        fetch script after every timeout."""
        if self._retry_in is not None:  # the timeout was the rate limit's wait: fetch now
            return False
        self._idle_timeouts += 1
        return self._idle_timeouts % IDLE_FETCH_EVERY != 0

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
