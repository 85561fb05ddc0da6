"""Jobs that run later and retries waiting for their next attempt: a sorted set in Redis, moved to
the queues by live workers and ``bench schedule``.

A delayed job is never held in a worker's memory (Celery's ``eta``/``countdown`` are): it is an
entry of ``delayed`` (score = due time, Redis's clock) whose data holds the message exactly as it
will be pushed. Every step is one Lua script (lua/*.lua):

- **delay** adds an entry (``enqueue_in`` / ``enqueue_at``) and publishes its due time.
- **ack_retry** finishes a failed job with attempts left: it leaves flight and enters the delayed
  set in one step, fenced by the owner token like ``ack`` (a worker that dies right after cannot
  lose the retry; a stale one changes nothing).
- **promote** moves the due entries to their queues with their pending counts and wake tokens, as a
  push does; its cost is O(due jobs) (ZRANGEBYSCORE with LIMIT). Several movers may race: each entry
  is moved once.
- **unschedule** takes one entry out (cancel, give up), unless a mover took it first.

``Promoter`` is the mover of one process: a thread that sleeps until the earliest due time it knows
of, woken earlier by the due times published on ``delayed:due`` (no Redis command while idle), and
that also moves every REFRESH seconds in case it missed a publication (it was disconnected).
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from benchcelery.bench.keys import Keys
from benchcelery.broker.scripts import ACK_RETRY, DELAY, PROMOTE, UNSCHEDULE

if TYPE_CHECKING:
    import redis

logger = logging.getLogger("benchcelery.broker.delayed")

PROMOTE_BATCH = 500
REFRESH = 15.0  # seconds between moves of a worker that heard of nothing due (publications wake it)
LATER, RETRY = "later", "retry"  # entry kinds: enqueue_in/enqueue_at, a retry's next attempt


@dataclass(frozen=True)
class Entry:
    """A delayed job: where its message goes and the message itself."""

    id: str  # entry id (the message's delivery tag: unique per push)
    list: str  # the Redis list it is pushed on
    queue: str
    site: str
    job_id: str
    kind: str
    message: str
    status_key: str = ""  # a tracked job's status key ('' = untracked)

    def encode(self) -> str:
        fields = [self.list, self.queue, self.site, self.job_id, self.kind, self.message, self.status_key]
        return json.dumps(fields)

    @classmethod
    def decode(cls, entry_id: str, raw: bytes | str) -> Entry:
        lst, queue, site, job_id, kind, message, status_key = json.loads(raw)
        return cls(entry_id, lst, queue, site, job_id, kind, message, status_key)


@dataclass(frozen=True)
class Moved:
    """What one promote call did."""

    moved: int
    next_due: float | None  # the earliest due time left (Redis's clock)
    redis_now: float


class Delayed:
    """The delayed-job scripts of one bench, on a plain (unprefixed) redis-py client."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.r = client
        self.keys = keys
        self._promote = client.register_script(PROMOTE)
        self._ack_retry = client.register_script(ACK_RETRY)
        self._delay = client.register_script(DELAY)
        self._unschedule = client.register_script(UNSCHEDULE)

    def delay(
        self, entry: Entry, *, at: float | None = None, seconds: float = 0.0, status: str = "", ttl: int = 0
    ) -> float:
        """Add ``entry``, due at ``at`` (epoch s) or ``seconds`` from Redis's now; returns its due time."""
        k = self.keys
        due = self._delay(
            keys=[k.delayed, k.delayed_data, k.delayed_ids, k.scheduled_counts(entry.queue)],
            args=[entry.id, entry.encode(), entry.job_id, entry.site, "" if at is None else repr(float(at)),
                  repr(float(seconds)), k.delayed_channel, entry.status_key, status, ttl or 1],
        )  # fmt: skip
        return float(due)

    def ack_retry(
        self, tag: str, token: str, entry: Entry, seconds: float, status: str = "", ttl: int = 0
    ) -> bool:
        """Finish the job ``tag`` held by ``token`` by scheduling ``entry`` ``seconds`` from now, in one
        step; False when ``token`` no longer owns the job (nothing changed then)."""
        k = self.keys
        done = self._ack_retry(
            keys=[k.unacked, k.inflight, k.leases, k.redeliveries, k.stale_acks, k.delayed, k.delayed_data,
                  k.delayed_ids, k.scheduled_counts(entry.queue), k.retrying_counts(entry.queue)],
            args=[tag, token, repr(float(seconds)), entry.id, entry.encode(), entry.job_id, entry.site,
                  k.delayed_channel, entry.status_key, status, ttl or 1, k.running(""), k.wake("")],
        )  # fmt: skip
        return int(done) == 1

    def promote(self) -> Moved:
        """Move every due entry to its queue (in batches of PROMOTE_BATCH)."""
        k, total = self.keys, 0
        while True:
            moved, nxt, now = self._promote(
                keys=[k.delayed, k.delayed_data, k.delayed_ids],
                args=[
                    PROMOTE_BATCH,
                    k.pending_counts(""),
                    k.wake(""),
                    k.scheduled_counts(""),
                    k.retrying_counts(""),
                    k.prefix,
                    k.sites(""),
                ],
            )
            total += int(moved)
            if int(moved) < PROMOTE_BATCH:
                return Moved(total, float(nxt) if nxt else None, float(now))

    def unschedule(self, entry_id: str) -> Entry | None:
        """Take one entry out; None when it was no longer delayed (moved, cancelled)."""
        k = self.keys
        raw = self._unschedule(
            keys=[k.delayed, k.delayed_data, k.delayed_ids],
            args=[entry_id, k.scheduled_counts(""), k.retrying_counts("")],
        )
        return Entry.decode(entry_id, raw) if raw else None

    def run_now(self, entry_id: str) -> bool:
        """Make one entry due now and move it; False when it was no longer delayed."""
        if not self.r.zadd(self.keys.delayed, {entry_id: 0}, xx=True, ch=True) and self.r.zscore(
            self.keys.delayed, entry_id
        ) is None:
            return False
        self.promote()
        return True


class Promoter(threading.Thread):
    """The delayed-job mover of one process (a worker, ``bench schedule``): a daemon thread.

    It moves due jobs when the earliest due time it knows of comes (learnt from each move's reply
    and from the due times published on ``delayed:due``), and at least every REFRESH seconds.
    Never raises: while Redis is unreachable it retries every second, then moves at once (it may
    have missed publications meanwhile).
    """

    def __init__(self, client: redis.Redis, keys: Keys, refresh: float = REFRESH) -> None:
        super().__init__(name="benchcelery-delayed", daemon=True)
        self.delayed = Delayed(client, keys)
        self.refresh = refresh
        self.stopped = threading.Event()
        self.next_due: float | None = None  # local clock (time.time), corrected by Redis's offset
        self.offset = 0.0  # Redis's clock - ours
        self.moved = 0
        self.outage = False
        self._pubsub: Any = None

    def stop(self) -> None:
        self.stopped.set()

    def run(self) -> None:
        next_move = 0.0  # move at once on start: entries may be due already
        while not self.stopped.is_set():
            try:
                self._subscribe()
                now = time.time()
                if now >= next_move or (self.next_due is not None and now >= self.next_due):
                    self._move()
                    next_move = time.time() + self.refresh
                wait = next_move - time.time()
                if self.next_due is not None:
                    wait = min(wait, self.next_due - time.time())
                self._listen(max(0.0, min(wait, self.refresh)))
            except Exception as exc:  # Redis down, failing over: keep trying (logged once per outage)
                if not self.outage:
                    logger.warning("Could not move delayed jobs (trying again every second): %s", exc)
                self.outage = True
                self._close()
                next_move = 0.0
                self.stopped.wait(1.0)
        self._close()

    def _move(self) -> None:
        result = self.delayed.promote()
        if self.outage:
            self.outage = False
            logger.info("Redis is reachable again: moving delayed jobs")
        self.offset = result.redis_now - time.time()
        self.next_due = None if result.next_due is None else result.next_due - self.offset
        if result.moved:
            self.moved += result.moved
            logger.info("Moved %d delayed job(s) to their queues", result.moved)

    def _subscribe(self) -> None:
        if self._pubsub is None:
            pubsub = self.delayed.r.pubsub(ignore_subscribe_messages=True)
            pubsub.subscribe(self.delayed.keys.delayed_channel)
            self._pubsub = pubsub

    def _listen(self, timeout: float) -> None:
        """Wait up to ``timeout`` s for published due times (earlier ones bring the next move forward)."""
        deadline = time.monotonic() + timeout
        while not self.stopped.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            message = self._pubsub.get_message(timeout=min(left, 1.0))
            if message is None or message.get("type") != "message":
                continue
            try:
                due = float(message["data"]) - self.offset
            except (TypeError, ValueError):
                continue
            if self.next_due is None or due < self.next_due:
                # A little spread, so the workers that all heard it do not all move at the same instant.
                self.next_due = due + random.uniform(0.0, 0.05)
                if due <= time.time():
                    return
                deadline = min(deadline, time.monotonic() + (self.next_due - time.time()))

    def _close(self) -> None:
        if self._pubsub is not None:
            try:
                self._pubsub.close()
            except Exception:  # already broken
                pass
            self._pubsub = None
