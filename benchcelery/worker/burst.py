"""``--burst``: a consumer bootstep that stops the worker once its queues are drained.

Every CHECK_INTERVAL (in the worker's event loop) it checks that nothing is running or reserved
and that every consumed queue is empty; after IDLE_CHECKS idle checks in a row (a message could
be on its way from Redis during one) it requests Celery's warm shutdown, which restores any
message caught in flight and exits 0. The pool is idle by then, so it is terminated rather than
drained: Celery's graceful pool stop waits for idle children to say goodbye, which can be most
of a short burst's lifetime (a burst worker started from cron or CI should exit as soon as its
work is done, as rq's does).

While the transport's last fetch took a job (it fetches again as soon as a slot is free), the
queues are not known to be empty: the check counts as busy without asking Redis, so a draining
worker spends no round trip on it between two jobs.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import sys
from collections.abc import Iterable
from typing import Any, NoReturn

from celery.worker import state

from benchcelery.jobs.inspect import waiting_lists
from benchcelery.runtime import get_runtime
from benchcelery.worker.periodic import Periodic

IDLE_CHECKS = 2
CHECK_INTERVAL = 0.025  # only queries Redis (one round trip) when nothing is running, reserved or expected


class Burst(Periodic):
    interval = CHECK_INTERVAL

    def __init__(self, parent: Any, burst: bool = False, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.enabled = bool(burst)
        self.idle = 0

    def check(self, c: Any) -> None:
        busy = len(state.active_requests) + len(state.reserved_requests) or _expects_work(c)
        if busy or _waiting(q.name for q in c.task_consumer.queues):
            self.idle = 0
            return
        self.idle += 1
        if self.idle >= IDLE_CHECKS and state.should_stop is None:
            print(f"Worker {c.hostname}: done, quitting", file=sys.stderr, flush=True)
            pool = c.controller.pool
            if hasattr(pool, "_pool"):  # prefork (a solo pool has no process to stop)
                pool.on_stop = lambda: _stop_idle_pool(pool)
            state.should_stop = 0


def _expects_work(c: Any) -> bool:
    """Whether the transport's last fetch took a job (so it fetches again before anything else)."""
    expects = getattr(getattr(c.task_consumer, "channel", None), "expects_work", None)
    return bool(expects()) if expects is not None else False


def _waiting(queues: Iterable[str]) -> int:
    """Messages waiting in these queues (every site's lists and kombu's), in two round trips."""
    rt = get_runtime()
    lists = [key for queue in queues for key in waiting_lists(rt.redis, rt.keys, queue)]
    pipe = rt.redis.pipeline(transaction=False)
    for key in lists:
        pipe.llen(key)
    return sum(pipe.execute())


def exit_now(code: int) -> NoReturn:
    """End a burst worker's process once the worker has stopped: run the atexit handlers, flush,
    and skip the interpreter's teardown of every module (0.1-0.2 s for a Celery worker)."""
    atexit._run_exitfuncs()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _stop_idle_pool(pool: Any) -> None:
    """Stop a prefork pool whose processes run nothing: kill them (a pool process that is asked
    to stop says goodbye and then sleeps 1 s before exiting), then let billiard tear the pool
    down, which no longer waits for them."""
    for proc in list(getattr(pool._pool, "_pool", None) or ()):
        if proc.exitcode is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.join(1)
    pool.on_terminate()
