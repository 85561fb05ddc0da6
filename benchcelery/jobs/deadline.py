"""A job's timeout when it runs in the worker's own main thread (``bench worker --pool solo``).

In a prefork pool the worker's main process enforces a job's timeout from outside: it sends the
pool process a signal at the soft limit (``SoftTimeLimitExceeded`` raised in the job) and kills it
at the hard limit. A job run in the worker's own main thread has no one outside to do that, so it
arms an alarm itself, as rq's SimpleWorker does: ``signal.setitimer`` (SIGALRM) raises
``SoftTimeLimitExceeded`` in the job at its timeout, and once more (``TimeLimitExceeded``) at the
hard limit if the job swallowed the first.

The trade-off: an exception is raised only between Python bytecodes. A job blocked inside C code
(a socket read without a timeout, a long C call) is not stopped until that call returns, and a job
that catches every exception is not stopped at all: a hard limit needs a process to kill
(``--pool prefork``, the default).
"""

from __future__ import annotations

import _signal
import signal
import threading
from time import monotonic
from types import FrameType
from typing import Any

from billiard.exceptions import SoftTimeLimitExceeded
from celery.exceptions import TimeLimitExceeded

# Set by ``bench worker --pool solo``: jobs run in this process's main thread, and arm their own alarm.
in_process = False


def limits(timelimit: Any) -> tuple[float | None, float | None]:
    """(soft, hard) seconds from a request's ``timelimit`` (Celery's ``[hard, soft]``; either may be None)."""
    hard, soft = [*(timelimit or ()), None, None][:2]
    soft_s = float(soft) if soft else None
    hard_s = float(hard) if hard else None
    return soft_s, hard_s


class Alarm:
    """Raise SoftTimeLimitExceeded in the main thread after ``soft`` seconds and TimeLimitExceeded
    at ``hard``, from ``arm`` until ``disarm``.

    The SIGALRM handler and timer are the process's, shared by its jobs one after the other: a job
    reads the timer and sets it only when it is not set to fire before the job's own limit, and
    leaves it set when it ends. A timer that fires early (set by an earlier job) is set again for
    the running job's limit; one that fires between jobs does nothing. A short job thus makes one
    system call for its alarm (it made four: two handler swaps, two timer writes). A job that
    installs its own SIGALRM handler, or stops or moves the timer, does so for its own run only:
    the next job installs the worker's handler again and reads the timer anew."""

    def __init__(self, soft: float | None, hard: float | None) -> None:
        self.soft, self.hard = soft, hard
        self.first = soft or hard
        self.fired = False
        self.started = self.due = 0.0

    def arm(self) -> bool:
        """Start counting; False (nothing armed) without limits or outside the main thread."""
        global _running
        if not self.first or threading.current_thread() is not threading.main_thread():
            return False
        self.started = monotonic()
        self.due = self.started + self.first
        _running = self  # first: a timer firing from here on finds this job and keeps its limit
        # _signal: the module behind ``signal``, without its enum conversions (run for every job).
        if _signal.getsignal(signal.SIGALRM) is not _on_alarm:
            _signal.signal(signal.SIGALRM, _on_alarm)
        left = _signal.getitimer(signal.ITIMER_REAL)[0]
        if not left or left > self.first:
            _set_timer(self.due, self.started)
        return True

    def disarm(self) -> None:
        global _running
        _running = None

    def expired(self, now: float) -> None:
        """The running job reached ``due``: raise its soft limit (and count on to the hard one), else its hard one."""
        soft, hard = self.soft, self.hard
        if not self.fired and soft:
            self.fired = True
            if hard and hard > soft:
                self.due = self.started + hard
                _set_timer(self.due, now)
            raise SoftTimeLimitExceeded(soft)
        raise TimeLimitExceeded(hard or soft)


_running: Alarm | None = None  # the alarm of the job running now in the main thread
_EARLY = 0.001  # s: a timer firing this close before a limit counts as on time


def _set_timer(at: float, now: float) -> None:
    _signal.setitimer(signal.ITIMER_REAL, max(at - now, 1e-6))


def _on_alarm(signum: int, frame: FrameType | None) -> None:
    alarm = _running
    if alarm is None:  # set by a job that ended since
        return
    now = monotonic()
    if now < alarm.due - _EARLY:  # set by an earlier job, for an earlier limit
        _set_timer(alarm.due, now)
        return
    alarm.expired(now)
