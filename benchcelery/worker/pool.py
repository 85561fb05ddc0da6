"""Celery's prefork pool, with a job written to a free process at once and no failing system call
per idle process on every turn of the event loop.

1. **A job goes to a free process at once.** Celery's AsynPool puts a job in its outbound buffer and
   writes it on a later turn of the event loop, once the poller reports a free process's pipe
   writable (which it always is): one extra turn per job, with the process idle meanwhile. Here
   ``apply_async`` hands the job to Celery's own writer (``schedule_writes``, what that later turn
   would call) right away; with no free process (fair scheduling) it stays in the buffer as before.
2. **No failing ``epoll_ctl(DEL)`` per tick.** On every turn with nothing to write, AsynPool takes
   each idle process's pipe out of the loop again: a system call that fails because the pipe is not
   in it, behind four Python calls. A turn skips that when none of those pipes is in the loop's
   reader, writer or consolidate tables (which mirror what the hub put in the poller).

3. **Finished jobs leave no timer behind.** Celery arms a timer for each job's time limit
   (``hub.call_later``) and cancels it when the job ends, but kombu's timer keeps a cancelled entry
   in its heap until the entry's own deadline (the queue's timeout: up to hours), so the main
   process grew with every job it ran. Once cancelled entries are half the heap (and at least
   COMPACT_AT), the heap is rebuilt without them.

What each change saves is measured in ``benchmarks/`` (RESULTS.md), not here.
"""

from __future__ import annotations

import heapq
from typing import Any

from celery.concurrency import asynpool, prefork

COMPACT_AT = 1000  # cancelled timer entries before the heap is rebuilt without them


def compact_timers(timer: Any) -> int:
    """Drop cancelled entries from a kombu timer's heap, in place (its loop holds the list);
    returns how many were dropped."""
    queue = timer._queue
    live = [event for event in queue if not event.entry.canceled]
    dropped = len(queue) - len(live)
    if dropped:
        heapq.heapify(live)
        queue[:] = live
    return dropped


class AsynPool(asynpool.AsynPool):
    def _create_write_handlers(self, hub: Any, *args: Any, **kwargs: Any) -> Any:
        result = super()._create_write_handlers(hub, *args, **kwargs)
        celery_on_poll_start: Any = self.on_poll_start  # type: ignore[has-type]
        outbound, inqueues, active = self.outbound_buffer, self._all_inqueues, self._active_writes
        known = (hub.readers, hub.writers, hub.consolidate)

        def on_poll_start() -> None:
            if outbound or any(fd in table for fd in inqueues if fd not in active for table in known):
                celery_on_poll_start()

        self.on_poll_start = on_poll_start

        if self.sched_strategy == asynpool.SCHED_STRATEGY_FAIR:
            celery_put: Any = self._quick_put  # type: ignore[has-type]
            schedule_writes = hub.consolidate_callback

            def put(job: Any) -> None:
                celery_put(job)
                schedule_writes(list(inqueues))  # skips busy processes and pipes being written

            self._quick_put = put
        return result

    def _create_timelimit_handlers(self, hub: Any) -> Any:
        result = super()._create_timelimit_handlers(hub)
        celery_cancel: Any = self.on_timeout_cancel  # type: ignore[has-type]
        timer = hub.timer
        cancelled = 0

        def on_timeout_cancel(R: Any) -> None:
            nonlocal cancelled
            celery_cancel(R)
            cancelled += 1
            if cancelled >= COMPACT_AT and cancelled * 2 >= len(timer):
                compact_timers(timer)
                cancelled = 0

        self.on_timeout_cancel = on_timeout_cancel
        return result


class TaskPool(prefork.TaskPool):
    """Celery's prefork pool with the AsynPool above."""

    Pool = AsynPool
