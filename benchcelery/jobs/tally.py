"""The success-path job metrics of a worker, summed in its main process and written once a second.

Every job that succeeds is counted by about eight commands (durations.py: its run-time and
wait-time buckets and sums; history.py: its minute counter, run-time and wait-time buckets, the
minute's wait bucket). Written per job, a busy worker sent them all: most of the Redis commands a
job cost. Summed per (key, field) here they are a few dozen commands a second whatever the job
rate. Nor is a job turned into its commands: it is counted in its group (succeeded.py: same
queue, method, site, minutes and buckets), whose commands durations.py and history.py build when
the tally is drained.

When they are written:

- **With a finishing job** (request.py), once ``EVERY`` has passed since the last write: through
  the job's channel (``note``), so they ride with the worker's next poll as before, with no
  round trip of their own. A job finishing after a quiet spell is written at once.
- **By a thread** when no finishing job carries them (the worker went idle, every slot holds a
  long job, or a ``--pool solo`` job runs in the main thread): ``STALE`` after the last write,
  in a pipeline of its own. A worker's last job is thus written within about a second.
- **On shutdown** (``flush``: when ``bench worker`` stops, warm or cold, ``--burst`` included,
  and at exit): everything left.

A hard kill (SIGKILL, the OOM killer, a power cut) loses what was summed since the last write:
up to about a second of success counters (the jobs themselves are not affected: their acks are
not summed). Failures are records, written at once by failures.py, not summed here.

Summing keeps what the commands mean in any order: ``HINCRBY``/``HINCRBYFLOAT`` add up per
(key, field); ``HSET`` keeps the last value per (key, field); ``ZADD key GT score member`` keeps
the largest score per (key, member); ``EXPIRE``/``EXPIREAT`` keep the last per key and go after
everything else (they only apply to a key that exists); any other command is kept as it is.

Thread safety: ``add_job`` and ``add`` (the event loop's thread) and ``drain`` (that thread or
the flusher thread) take one lock. A forked child (a pool process) starts with an empty tally and
no thread: what the parent summed is the parent's to write.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from benchcelery.jobs.succeeded import Command, Succeeded

if TYPE_CHECKING:
    from benchcelery.bench.keys import Keys

logger = logging.getLogger("benchcelery.job")

EVERY = 1.0  # s: at most one write a second from a finishing job
STALE = 1.25  # s: the thread writes what no finishing job carried by then (a busy worker's jobs do first)


class Tally:
    """Commands summed per (key, field) until drained."""

    def __init__(self, every: float = EVERY, clock: Callable[[], float] = time.monotonic) -> None:
        self.every = every
        self.clock = clock
        self.lock = threading.Lock()
        self.last = float("-inf")  # clock time of the last drain
        self._reset()

    def _reset(self) -> None:
        self.ints: dict[tuple[Any, Any], int] = {}  # HINCRBY (key, field) -> sum
        self.floats: dict[tuple[Any, Any], float] = {}  # HINCRBYFLOAT (key, field) -> sum
        self.sets: dict[tuple[Any, Any], Any] = {}  # HSET (key, field) -> last value
        self.tops: dict[tuple[Any, Any], float] = {}  # ZADD GT (key, member) -> largest score
        self.expiries: dict[Any, Command] = {}  # key -> its last EXPIRE/EXPIREAT
        self.others: list[Command] = []
        self.jobs = Succeeded()  # succeeded jobs by group: their commands are built when drained

    def __len__(self) -> int:
        """How many commands ``drain`` would return now (at least: a group of jobs counts one)."""
        summed = len(self.ints) + len(self.floats) + len(self.sets) + len(self.tops)
        return summed + len(self.expiries) + len(self.others) + len(self.jobs.groups)

    def add(self, commands: list[Command]) -> bool:
        """Fold ``commands`` in; True when the tally was empty before (nothing was waiting)."""
        with self.lock:
            was_empty = not len(self)
            for command in commands:
                self._fold(command)
            return was_empty and bool(len(self))

    def add_job(self, keys: Keys, queue: Any, method: Any, site: Any, enqueued: Any, at: float, runtime: float) -> bool:
        """Count one succeeded job (succeeded.Succeeded.add: its group, not its commands); True
        when the tally was empty before."""
        self.lock.acquire()  # not ``with``: half the cost, once per job
        try:
            was_empty = not len(self)
            for command in self.jobs.add(keys, queue, method, site, enqueued, at, runtime):
                self._fold(command)
            return was_empty
        finally:
            self.lock.release()

    def _fold(self, command: Command) -> None:
        name = str(command[0]).upper()
        if name == "HINCRBY" and len(command) == 4:
            where = (command[1], command[2])
            self.ints[where] = self.ints.get(where, 0) + int(command[3])
        elif name == "HINCRBYFLOAT" and len(command) == 4:
            where = (command[1], command[2])
            self.floats[where] = self.floats.get(where, 0.0) + float(command[3])
        elif name == "HSET" and len(command) == 4:
            where = (command[1], command[2])
            self.sets.pop(where, None)  # last wins (and goes last)
            self.sets[where] = command[3]
        elif name == "ZADD" and len(command) == 5 and str(command[2]).upper() == "GT":
            where = (command[1], command[4])
            self.tops[where] = max(self.tops.get(where, float("-inf")), float(command[3]))
        elif name in ("EXPIRE", "EXPIREAT") and len(command) == 3:
            self.expiries.pop(command[1], None)
            self.expiries[command[1]] = command
        else:
            self.others.append(command)

    def due(self, now: float | None = None) -> bool:
        """Whether there is something to write and ``every`` has passed since the last write."""
        return (self.clock() if now is None else now) - self.last >= self.every and bool(len(self))

    def stale_in(self, after: float, now: float | None = None) -> float | None:
        """Seconds until what waits has waited ``after`` since the last write (0: now); None when empty."""
        if not len(self):
            return None
        return max(0.0, self.last + after - (self.clock() if now is None else now))

    def drain(self, now: float | None = None) -> list[Command]:
        """The summed commands (increments first, expiries last); the tally starts again empty."""
        with self.lock:
            for command in self.jobs.commands():
                self._fold(command)
            out: list[Command] = [("HINCRBY", key, field, n) for (key, field), n in self.ints.items()]
            out += [("HINCRBYFLOAT", key, field, repr(round(x, 6))) for (key, field), x in self.floats.items()]
            out += [("HSET", key, field, value) for (key, field), value in self.sets.items()]
            out += [("ZADD", key, "GT", round(score, 6), member) for (key, member), score in self.tops.items()]
            out += self.others
            out += self.expiries.values()
            self._reset()
            self.last = self.clock() if now is None else now
            return out


# --- this process's tally, its thread and its last write ---
TALLY = Tally()
_owner = 0  # pid whose thread and exit hook are started
_wake = threading.Event()


def count(
    keys: Keys,
    queue: Any,
    method: Any,
    site: Any,
    enqueued: Any,
    at: float,
    runtime: float,
    write: Callable[[list[Command]], None],
) -> None:
    """Add one succeeded job (Tally.add_job); when a write is due, hand the summed commands to
    ``write`` (the job's channel: they ride with its next poll)."""
    _start()
    if TALLY.add_job(keys, queue, method, site, enqueued, at, runtime):
        _wake.set()
    if TALLY.due():
        summed = TALLY.drain()
        if summed:
            write(summed)


def flush() -> None:
    """Write everything summed, now, in one pipeline (shutdown, and the thread). Never raises:
    metrics must not fail a worker's stop."""
    if _owner != os.getpid() or not len(TALLY):
        return
    summed = TALLY.drain()
    if not summed:
        return
    try:
        from benchcelery.runtime import get_runtime

        pipe = get_runtime().redis.pipeline(transaction=False)
        for command in summed:
            pipe.execute_command(*command)
        pipe.execute(raise_on_error=False)
    except Exception as exc:  # Redis away: these counts are lost, as a per-job write's were
        logger.warning("Could not write the job metrics of the last second (%d commands): %s", len(summed), exc)


def _start() -> None:
    """Start this process's thread and exit hook (once per process: a forked child's ``_owner``
    is 0 again, ``_forked``; no getpid per job)."""
    global _owner
    if _owner:
        return
    _owner = os.getpid()
    atexit.register(flush)
    threading.Thread(target=_run, name="benchcelery-tally", daemon=True).start()


def _run() -> None:
    """Write what no finishing job carried within STALE of the last write; sleeps while nothing waits."""
    while True:
        _wake.wait()
        _wake.clear()  # an add after this sets it again; one before is seen below
        while (delay := TALLY.stale_in(STALE)) is not None:
            if delay > 0:
                time.sleep(delay)
            else:
                flush()


def _forked() -> None:
    """In a forked child: nothing of the parent's to write, no thread (it did not survive the fork)."""
    global TALLY, _owner, _wake
    TALLY, _owner, _wake = Tally(), 0, threading.Event()


os.register_at_fork(after_in_child=_forked)
