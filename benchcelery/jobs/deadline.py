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

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
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


@contextmanager
def alarm(soft: float | None, hard: float | None) -> Iterator[None]:
    """Raise SoftTimeLimitExceeded in this (main) thread after ``soft`` seconds and
    TimeLimitExceeded at ``hard``; nothing outside the main thread, or without limits."""
    first = soft or hard
    if not first or threading.current_thread() is not threading.main_thread():
        yield
        return
    second = hard - first if hard and soft and hard > soft else None
    fired = False

    def expired(signum: int, frame: FrameType | None) -> None:
        nonlocal fired
        if not fired and soft:
            fired = True
            if second:
                signal.setitimer(signal.ITIMER_REAL, second)
            raise SoftTimeLimitExceeded(soft)
        raise TimeLimitExceeded(hard or soft)

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, first)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
