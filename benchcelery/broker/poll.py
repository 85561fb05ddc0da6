"""The transport channel's poll: no polling when idle, one round trip per job when busy. An idle
worker blocks on the queues' ``wake`` lists (every push adds a token) and fetches when woken (or
every IDLE_FETCH_EVERY timeouts, for what other tools pushed without a token); once a fetch found
a job, the next poll is the fetch script itself, sent on the poll connection, until a fetch finds
nothing. The acks of the jobs that finished meanwhile ride in that fetch (acks.py). A taken
job goes through the intake (intake.py) before kombu sees it. Mixed into ``transport.Channel``.

A busy worker leaves out of its fetches, for SKIP_EMPTY seconds, the queues its last fetches
found with no job to take (each costs the script a scan of its sites per job otherwise): a job
pushed on such a queue meanwhile waits up to that long (~50 ms) behind the worker's later queues,
the only departure from the queue order. It is never stranded: a fetch that takes nothing (of
the queues it was given) leaves the wake tokens of the queues it did not look at, so the worker's
BRPOP returns at once and fetches all its queues."""

from __future__ import annotations

import logging
from time import monotonic
from typing import TYPE_CHECKING, Any

import redis
from hiredis import pack_command
from kombu.transport import redis as kombu_redis

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
                script = self.delivery.fetch_command(self._fetch_queues, self._fetch_token, acks)
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
        taken: Taken | None = None
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
                taken, self._retry_in = fetched.taken, fetched.retry_in
                token = self._fetch_token
                if taken is not None and self._closing:  # the worker stops: not ours to run
                    self.delivery.restore(taken.tag, token)
                    taken = None
            elif self._closing or (reply is None and self._skip_idle_fetch()):
                taken = None
            else:  # woken by a push (or every IDLE_FETCH_EVERY timeouts): take a job, if any
                token = self._new_token()
                try:
                    fetched = self.delivery.fetch_result(self._fetch_queues, token)
                    self._found_empty(self._fetch_queues, fetched.passed)
                    # Nothing in the sites' lists: another tool's pushes (their wake tokens woke us)
                    # or the one-list layout may wait in kombu's lists; move them and fetch again.
                    if fetched.taken is None and fetched.retry_in is None and self._adopt(self._fetch_queues):
                        fetched = self.delivery.fetch_result(self._fetch_queues, token)
                    taken, self._retry_in = fetched.taken, fetched.retry_in
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
