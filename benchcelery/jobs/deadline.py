"""A job's timeout when it runs in the worker's own main thread (``bench worker --pool solo``).

In a prefork pool the worker's main process enforces a job's timeout from outside: it sends the
pool process a signal at the soft limit (``SoftTimeLimitExceeded`` raised in the job) and kills it
at the hard limit. A job run in the worker's own main thread has no one outside to do that, so it
arms an alarm itself, as rq's SimpleWorker does: ``signal.setitimer`` (SIGALRM) raises
``SoftTimeLimitExceeded`` in the job at its timeout, and once more (``TimeLimitExceeded``) at the
hard limit if the job swallowed the first. The previous SIGALRM handler and timer are restored
when the job ends.

The trade-off: an exception is raised only between Python bytecodes. A job blocked inside C code
(a socket read without a timeout, a long C call) is not stopped until that call returns, and a job
that catches every exception is not stopped at all: a hard limit needs a process to kill
(``--pool prefork``, the default).
"""

from __future__ import annotations

import _signal
import signal
import threading
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
    at ``hard``, from ``arm`` until ``disarm`` (which restores the SIGALRM handler found)."""

    def __init__(self, soft: float | None, hard: float | None) -> None:
        self.soft, self.hard = soft, hard
        self.first = soft or hard
        self.fired = False
        self.previous: Any = None

    def arm(self) -> bool:
        """Start the timer; False (nothing armed) without limits or outside the main thread."""
        if not self.first or threading.current_thread() is not threading.main_thread():
            return False
        # _signal: the module behind ``signal``, without its enum conversions (run for every job).
        self.previous = _signal.signal(signal.SIGALRM, self.expired)
        _signal.setitimer(signal.ITIMER_REAL, self.first)
        return True

    def disarm(self) -> None:
        _signal.setitimer(signal.ITIMER_REAL, 0)
        _signal.signal(signal.SIGALRM, self.previous)

    def expired(self, signum: int, frame: FrameType | None) -> None:
        soft, hard = self.soft, self.hard
        if not self.fired and soft:
            self.fired = True
            if hard and hard > soft:
                _signal.setitimer(signal.ITIMER_REAL, hard - soft)
            raise SoftTimeLimitExceeded(soft)
        raise TimeLimitExceeded(hard or soft)
