"""Reliable delivery: taking a job, leasing it while it runs, and recovering it when its worker dies.

Every step that moves a job is one Lua script, so no crash (of a worker, of its pool process, of
Redis with ``appendfsync always``) can leave a job in two places or in none:

- **fetch** pops the next message (the worker's queue order, skipping queues paused for the whole
  bench; within a queue the sites with waiting jobs in turn, by weight, skipping paused sites, sites
  at their cap and jobs held back by a rate limit; within a site its priority buckets) and parks it
  in flight in the same script: ``unacked`` (the message exactly as it waited), ``inflight``
  (owner token, source list, time taken, site, queue, the message's own tag, whether it counts
  against its site's cap), ``leases`` (expiry) and the per-site
  pending counter (and the site's running counter when it has a cap). There is no moment at which a
  popped message is held only by a client. A busy worker of short jobs takes a batch (poll.py):
  each job of it is its own take (tag, lease, record), sites and round_robin queues taking turns
  job by job as they would fetch by fetch. When only rate-limited jobs wait, fetch returns how long
  until one may start, and the worker fetches again then (the jobs stay where they wait). A busy
  worker's fetch first applies the acks of the jobs it finished since its last one (the ack
  script's body, their outcomes in its reply: acks.py), and says how many of its queues it found
  with no job to take (the worker leaves them out of its busy fetches for a moment: poll.py).
- **adopt** moves messages from kombu's per-queue lists (another tool's pushes, or a bench upgraded
  from the one-list layout) into their sites' lists, one element at a time inside the script.
- **renew**: the live worker extends the lease of every job it holds, every ``lease / 3`` seconds,
  for as long as it holds it, whatever the job's timeout.
- **ack** forgets a finished job (its message, record and lease; its lapses when it had any);
  **restore** (and recover) put a job back in its site's list and its site back in the turns; both
  stop counting it against its site's cap. They act only while the caller's owner
  token is still the job's owner. A worker
  that was stalled past its lease (its job recovered and perhaps taken by another worker) cannot
  remove or re-queue the new holder's job: its late finish is counted in ``stale_acks`` and
  logged, and the job's message stays with its new holder. A finish of a take Redis has no
  record of (Redis restarted without its data, or the job was put back and finished elsewhere)
  is counted in ``lost_acks``.
- Every take's delivery tag is its owner token, fresh for each take: the late finish of a job's
  first run (its lease lapsed, the job was taken again) can never match, and remove, the in-flight
  record of the second, even in the same process. The message's own delivery tag, under which
  its lapses are counted, is read only while some take lapsed in the last day (``lapsed_takes``;
  by recover otherwise): a lapse older than that no longer counts.
- **recover** puts every job whose lease lapsed back at the front of its queue (any live worker and
  ``bench schedule`` run it every few seconds), counts it per site in ``recovered:<queue>`` and per
  job in ``redeliveries`` (``max_redeliveries`` fails a job whose workers keep dying).

Idle workers do not poll: every push also pushes a token on ``wake:<queue>``, and an idle worker
blocks on those lists (BRPOP with a timeout) before running fetch; a fetch that takes nothing clears
the tokens of the queues it looked at (one that takes a job leaves them: they matter only to a
worker about to block), so stale tokens cost at most one extra fetch.

Times are Redis's own clock (``TIME``), so workers on hosts with skewed clocks agree on leases.

Out of memory (``maxmemory`` reached under ``noeviction``): fetch and recover are refused as a
whole before they take or move anything; renew, ack and restore always run (scripts.py), so a
live job keeps its lease, and no job of a live worker is put back, while Redis is full.
The scripts' Lua, with the KEYS, ARGV and keys of each, is in ``lua/*.lua`` (scripts.py reads it).
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from benchcelery.bench.keys import Keys
from benchcelery.broker.scripts import ACK, ADOPT, FETCH, RECOVER, RENEW, RESTORE

if TYPE_CHECKING:
    import redis

logger = logging.getLogger("benchcelery.broker.delivery")

DEFAULT_LEASE = 30  # seconds; config ``job_lease``
SWEEP_INTERVAL = 5.0  # seconds between recovery sweeps of one process
RECOVER_BATCH = 200
ACKED, STALE, UNKNOWN = 1, -1, -2  # replies of the ack script
ADOPT_BATCH = 1000


@dataclass(frozen=True)
class Fetched:
    """What one fetch did: the acks it carried, the queues it found with nothing to take, the jobs."""

    takes: list[Taken]  # the jobs taken, in order
    retry_in: float | None  # nothing taken: s until a rate-limited job may start (None: none waits)
    passed: int  # leading queues (in the fetch's order) found with no job to take: all when none taken
    acks: list[int]  # the outcome of each carried ack, in order: ACKED, STALE or UNKNOWN

    @property
    def taken(self) -> Taken | None:
        """The first job taken, if any."""
        return self.takes[0] if self.takes else None


@dataclass(frozen=True)
class Taken:
    """A job fetch parked in flight for its owner token."""

    queue: str
    tag: str
    raw: bytes
    lapses: int  # times this job's lease lapsed before (its workers died)


class Delivery:
    """The delivery scripts of one bench, bound to a plain (unprefixed) redis-py client."""

    def __init__(self, client: redis.Redis, keys: Keys, lease: int = DEFAULT_LEASE) -> None:
        self.r = client
        self.keys = keys
        self.lease = max(3, int(lease))
        self._fetch = client.register_script(FETCH)
        self._ack = client.register_script(ACK)
        self._restore = client.register_script(RESTORE)
        self._renew = client.register_script(RENEW)
        self._recover = client.register_script(RECOVER)
        self._adopt = client.register_script(ADOPT)
        self._fixed = [keys.unacked, keys.inflight, keys.leases, keys.redeliveries]
        self._loaded = False
        self._prefixes = [keys.pending_counts(""), keys.wake("")]
        self._site_prefixes = [keys.sites(""), keys.running("")]
        self._fetch_keys: dict[tuple[str, ...], list[str]] = {}

    def fetch_command(
        self,
        queues: Sequence[str],
        token: str,
        acks: Sequence[tuple[str, str]] = (),
        want: int = 1,
        rotate: bool = False,
    ) -> list[Any]:
        """EVALSHA arguments of a fetch of up to ``want`` jobs, for a caller that sends it itself
        (the worker's poll connection) and passes the reply to ``fetched``. ``acks`` (delivery tag,
        owner token) are applied first, as ``ack`` would (their outcomes are in the reply). The
        first job taken is owned by ``token``, the k-th by ``<token>.<k>`` (its delivery tag);
        ``rotate``: a queue a job was taken from goes last for the next (round_robin)."""
        if not self._loaded:
            self.r.script_load(FETCH)
            self._loaded = True
        keys = self._fetch_keys.get(tuple(queues))
        if keys is None:  # once per queue order (a worker polls for every job)
            keys = [*self._fixed, self.keys.rates, self.keys.stale_acks, self.keys.lost_acks, self.keys.lapsed_takes]
            for q in queues:
                k = self.keys
                keys += [k.pending_counts(q), k.wake(q), k.sites(q), k.fair(q), k.running(q)]
            keys.append(self.keys.paused)  # bench queue pause: fetch skips the paused queues
            self._fetch_keys[tuple(queues)] = keys
        args: list[Any] = [token, self.lease, self.keys.prefix, want, int(rotate), len(acks)]
        for tag, owner in acks:
            args += [tag, owner]
        return [self._fetch.sha, len(keys), *keys, *args, *queues]

    def fetch(self, queues: Sequence[str], token: str) -> Taken | None:
        """Take the next job of ``queues`` (in that order; sites in turn) for ``token``."""
        return self.fetch_result(queues, token).taken

    def fetch_result(self, queues: Sequence[str], token: str, want: int = 1) -> Fetched:
        """``fetch`` of up to ``want`` jobs, with what else the fetch found (the queues it passed, a
        rate limit's wait)."""
        if not queues:
            return Fetched([], None, 0, [])
        _sha, n, *rest = self.fetch_command(queues, token, want=want)
        return self.fetched(self._fetch(keys=rest[:n], args=rest[n:]))

    @staticmethod
    def fetched(reply: Any) -> Fetched:
        """The reply of the fetch script (fetch.lua: {acks, passed, jobs taken or ms or 0})."""
        outcomes, passed, got = reply
        acks = [int(a) for a in outcomes]
        if isinstance(got, list):
            takes = [
                Taken(_text(got[i]), _text(got[i + 1]), got[i + 2], int(got[i + 3])) for i in range(0, len(got), 4)
            ]
            return Fetched(takes, None, int(passed), acks)
        ms = int(got or 0)
        return Fetched([], ms / 1000 if ms > 0 else None, int(passed), acks)

    def ack(self, tag: str, token: str) -> int:
        """Forget a finished job: ACKED, STALE (the lease had lapsed: counted in stale_acks) or
        UNKNOWN (Redis had no record of the take: counted in lost_acks). A busy worker's acks ride
        in its next fetch instead (``fetch_command``)."""
        keys = [*self._fixed, self.keys.stale_acks, self.keys.lost_acks, self.keys.lapsed_takes]
        return int(self._ack(keys=keys, args=[tag, token, *self._ack_prefixes]))

    @property
    def _ack_prefixes(self) -> list[str]:
        return [self.keys.running(""), self.keys.wake("")]

    def owns(self, tag: str, token: str) -> bool:
        """Whether ``token`` still owns the job, with its lease renewed now (a renewal of that one job)."""
        return not self.renew({tag: token})

    def restore(self, tag: str, token: str, front: bool = True) -> bool:
        """Put a job back in its queue (front: taken next); False when ``token`` no longer owns it."""
        args = [tag, token, int(front), *self._prefixes, *self._site_prefixes]
        done = self._restore(keys=self._fixed[:3], args=args)
        return int(done) == 1

    def renew(self, held: dict[str, str]) -> list[str]:
        """Extend the leases of ``held`` (tag -> token); returns the tags that are no longer ours."""
        if not held:
            return []
        args: list[Any] = [self.lease]
        for tag, token in held.items():
            args += [tag, token]
        return [_text(t) for t in self._renew(keys=[self.keys.leases, self.keys.inflight], args=args)]

    def recover(self) -> list[str]:
        """Put every job whose lease lapsed back in its queue; returns their delivery tags."""
        out: list[str] = []
        while True:
            args = [RECOVER_BATCH, *self._prefixes, self.keys.recovered(""), *self._site_prefixes]
            tags = self._recover(keys=[*self._fixed, self.keys.lapsed_takes], args=args)
            out += [_text(t) for t in tags]
            if len(tags) < RECOVER_BATCH:
                return out

    def adopt(self, queues: Iterable[str]) -> int:
        """Move the messages waiting in kombu's lists of ``queues`` into their sites' lists (see
        adopt.lua); returns how many moved."""
        moved = 0
        for q in queues:
            keys = [*self.keys.queue_lists(q), self.keys.sites(q), self.keys.wake(q)]
            while True:
                n = int(self._adopt(keys=keys, args=[self.keys.prefix, q, ADOPT_BATCH]))
                moved += n
                if n < ADOPT_BATCH:
                    break
        return moved


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _new_token_source() -> None:
    """64 random bits per process (again in a forked child), then a counter: unique tokens without
    a uuid4 (and its getrandom system call) for every fetch."""
    global _token_base, _token_count
    _token_base = os.urandom(8).hex()
    _token_count = itertools.count(1)


_token_base = ""
_token_count = itertools.count(1)
_new_token_source()
os.register_at_fork(after_in_child=_new_token_source)


def new_token(owner: str = "") -> str:
    """A take's owner token: ``<worker name>|<random>-<n>`` (the worker shows in ``inflight``)."""
    token = f"{_token_base}-{next(_token_count):x}"
    return f"{owner}|{token}" if owner else token


def token_owner(token: str) -> str | None:
    """The worker name a token was made for, if any."""
    owner, sep, _ = token.rpartition("|")
    return owner if sep and owner else None


class Sweeper:
    """Runs ``recover`` at most every SWEEP_INTERVAL seconds, and only once this process has been
    in steady contact with Redis for longer than a renewal period.

    After Redis was unreachable, paused or stopped, live workers need one renewal period to extend
    the leases that lapsed meanwhile; sweeping before that would re-queue jobs that are still
    running. The period counts from the first call that succeeded after contact was lost (not from
    the last failure: a pause can end long after this process's last failed call). A call that
    took longer than SLOW seconds counts as lost contact until it returned.
    """

    SLOW = 2.0

    def __init__(self, lease: int = DEFAULT_LEASE) -> None:
        self.grace = lease / 3 + self.SLOW
        self.steady_since = time.monotonic()
        self.last_sweep = 0.0
        self.cut = False  # a call failed, and none succeeded since

    def lost_contact(self) -> None:
        self.cut = True
        self.steady_since = time.monotonic()

    def timed(self, started: float) -> None:
        """Note that a Redis call that began at ``started`` (monotonic) succeeded, and how long it took."""
        if self.cut or time.monotonic() - started > self.SLOW:
            self.steady_since = time.monotonic()  # contact is back (or was slow) only now
        self.cut = False

    def maybe_sweep(self, delivery: Delivery) -> list[str]:
        """Recover lapsed leases if it is time and safe; never raises for Redis errors."""
        now = time.monotonic()
        if self.cut or now - self.last_sweep < SWEEP_INTERVAL or now - self.steady_since < self.grace:
            return []  # (cut: no call succeeded since contact was lost; the grace has not begun)
        self.last_sweep = now
        try:
            tags = delivery.recover()
        except Exception as exc:
            self.lost_contact()
            logger.warning("Could not recover lapsed job leases: %s", exc)
            return []
        if self.cut:  # the recover call reported lost contact itself (scheduler/sweeper.py)
            return tags
        self.timed(now)
        if tags:
            logger.warning("Put %d job(s) back in their queue: their worker stopped renewing their lease", len(tags))
        return tags


class LeaseKeeper(threading.Thread):
    """One thread per worker process: renews the leases of the jobs its channels hold and sweeps
    lapsed leases of dead workers. It runs outside Celery's event loop, so a job keeps its lease
    during a warm shutdown too; renewals stop only when the process stops (or stalls), and when the
    event loop has not turned for longer than the lease (``loop_turn``, monotonic; a loop that is
    blocked cannot start, finish or acknowledge the jobs it holds: they go back to other workers).

    ``holders`` are objects (transport channels) with ``delivery``, ``held()`` -> {tag: token}
    and ``renewed(held, lost tags, started)``; a process that holds no jobs (``bench schedule``) passes none and the
    ``delivery`` to sweep with. Losing Redis is logged once, being cut off for longer than the
    lease once more, and contact coming back once.
    """

    def __init__(
        self,
        holders: Iterable[Any],
        lease: int = DEFAULT_LEASE,
        delivery: Delivery | None = None,
        loop_turn: Callable[[], float | None] = lambda: None,
        stopping: Callable[[], bool] = lambda: False,
    ) -> None:
        super().__init__(name="benchcelery-leases", daemon=True)
        self.holders = holders
        self.delivery = delivery
        self.lease = lease
        self.sweeper = Sweeper(lease)
        self.interval = min(lease / 3, SWEEP_INTERVAL)
        self.stopped = threading.Event()
        self.loop_turn = loop_turn
        self.stopping = stopping
        self.failing_since: float | None = None
        self.back_at = 0.0  # monotonic time Redis was reached again after an outage
        self.said_cut_off = False
        self.said_stalled = False

    def run(self) -> None:
        # While Redis cannot be reached, try every RETRY seconds: leases that lapsed during the
        # outage are renewed as soon as it ends, before any sweeper's grace after it runs out.
        while not self.stopped.wait(self.interval if self.failing_since is None else min(self.interval, self.RETRY)):
            self.tick()

    RETRY = 1.0

    def loop_stalled(self) -> bool:
        """Whether the event loop has not turned for longer than the lease (said once). Not judged
        while Redis cannot be reached, and counted from when it was reached again: a loop that
        waited on Redis (read timeouts, Celery's reconnect) is not blocked, and gets a lease to
        turn again; meanwhile its jobs, and its finished jobs' acks, keep their leases."""
        turned = self.loop_turn()
        stalled = (
            turned is not None
            and not self.stopping()
            and self.failing_since is None
            and time.monotonic() - max(turned, self.back_at) > self.lease
        )
        if stalled and not self.said_stalled:
            logger.error(
                "This worker's event loop has not turned for %.0f s (longer than job_lease, %s s): the leases of "
                "the jobs it holds are no longer renewed, so they go back to other workers",
                time.monotonic() - (turned or 0),
                self.lease,
            )
        elif not stalled and self.said_stalled:
            logger.warning("This worker's event loop turns again; its leases are renewed again")
        self.said_stalled = stalled
        return stalled

    def tick(self) -> None:
        every = list(self.holders)
        # A stalled loop's jobs are not renewed (they go back to other workers), but the sweep goes
        # on: it is what brings back the jobs of workers that died meanwhile.
        holders = [] if self.loop_stalled() else every
        started = time.monotonic()
        try:  # nothing here may end the thread: a worker without it neither renews nor sweeps
            delivery = every[0].delivery if every else self.delivery
            if delivery is None:
                return
            for holder in holders:
                held = holder.held()
                lost = holder.delivery.renew(held)
                holder.renewed(held, lost, started)
        except Exception as exc:  # Redis down, paused, failing over, cut off: keep trying
            self.sweeper.lost_contact()
            self.failed(exc)
            return
        self.reached()
        self.sweeper.timed(started)
        self.sweeper.maybe_sweep(delivery)

    def failed(self, exc: Exception) -> None:
        now = time.monotonic()
        if self.failing_since is None:
            self.failing_since = now
            retry = min(self.interval, self.RETRY)
            logger.warning("Could not renew job leases: %s (retrying every %.0f s)", exc, retry)
        elif now - self.failing_since > self.lease and not self.said_cut_off:
            self.said_cut_off = True
            logger.error(
                "Cut off from Redis for %.0f s, longer than job_lease (%s s): the leases of the jobs this worker "
                "holds lapsed, so they go back to other workers (a job still running here may run twice)",
                now - self.failing_since,
                self.lease,
            )

    def reached(self) -> None:
        if self.failing_since is not None:
            self.back_at = time.monotonic()
            logger.warning(
                "Reached Redis again after %.0f s; job leases are renewed again", time.monotonic() - self.failing_since
            )
        self.failing_since, self.said_cut_off = None, False


def decode_meta(raw: bytes | str) -> dict[str, Any]:
    """An ``inflight`` value -> {token, worker, list, taken_at, site, queue}."""
    token, list_key, taken, site, queue = json.loads(raw)[:5]
    worker = token_owner(token)
    return {"token": token, "worker": worker, "list": list_key, "taken_at": float(taken), "site": site, "queue": queue}
