"""One job ahead: ``bench worker`` holds one job more than its pool process runs, while its jobs are short.

With one job per process (Celery's ``acks_late`` + prefetch 1), a process that finishes a job waits
for the main process to acknowledge it, fetch the next one from Redis, build its request and send
it over: the two processes take turns. With one job held ahead, the next job is already fetched
and decoded when the process frees, so the main process's work overlaps the job's (+40 % no-op
throughput in an A/B; a ``worker-pool`` holds none ahead, see ``held_ahead``).

A job held ahead must not wait behind a long one while another worker idles (the reason Celery
users turn prefetching off): a job that waited WAIT seconds for a free process goes back to the
front of its queue, where an idle worker (woken by the push) takes it, and the worker holds no
job ahead until none of its running jobs is older than WAIT. Held jobs keep their leases, go back
to their queue on shutdown (transport.QoS.restore_unacked), and come back by their lease if the
worker is killed: they never ran, so they run once.
"""

from __future__ import annotations

import logging
from time import monotonic
from typing import Any

from celery.worker import state

from benchcelery.worker.periodic import Periodic

AHEAD = 1  # jobs held beyond the pool's processes
WAIT = 0.25  # seconds a held job may wait for a free process before it goes back to its queue
CHECK_INTERVAL = 0.1

logger = logging.getLogger("benchcelery.worker")


def held_ahead(processes: int) -> int:
    """Jobs held beyond the pool's processes: AHEAD for ``bench worker`` (one process). None for
    a pool: one of its processes is mostly free to take the next job, and holding one more there
    measured slower (2 processes: 1,180 instead of 1,490 no-op jobs/s)."""
    return AHEAD if processes == 1 else 0


class Lookahead(Periodic):
    interval = CHECK_INTERVAL

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.enabled = bool(getattr(parent, "ahead", 0))
        self.on = True
        self.first_seen: dict[str, float] = {}  # request id -> when a check first saw it (waiting or running)

    def start(self, c: Any) -> None:
        self.on = True  # a restarted consumer starts from its full prefetch count again
        super().start(c)

    def check(self, c: Any) -> None:
        semaphore = getattr(c.controller, "semaphore", None)  # the requests waiting for a free process
        waiting = [w for w in getattr(semaphore, "_waiting", ()) if _request(w) is not None]
        if not waiting and not self.first_seen and self.on:
            return  # the common case of a busy worker of short jobs: nothing to look at
        now = monotonic()
        ids = [_request(w).id for w in waiting] + [r.id for r in state.active_requests]
        seen = self.first_seen = {rid: self.first_seen.get(rid, now) for rid in ids}
        if state.should_stop is not None or state.should_terminate is not None:
            return  # shutting down: what waits goes back with restore_unacked
        for waiter in waiting:
            if now - seen[_request(waiter).id] >= WAIT:
                self._give_back(semaphore, waiter)
        long_running = any(now - seen[r.id] >= WAIT for r in state.active_requests)
        if long_running and self.on:
            self.on = False
            c.qos.decrement_eventually(AHEAD)
            c.qos.update()
        elif not long_running and not self.on:
            self.on = True
            c.qos.increment_eventually(AHEAD)
            c.qos.update()

    def _give_back(self, semaphore: Any, waiter: tuple[Any, ...]) -> None:
        """Put a request that waits for a free process back in its queue (next to be taken)."""
        semaphore._waiting.remove(waiter)
        request = _request(waiter)
        state.task_ready(request)
        message = request.message
        message._state = "REQUEUED"
        try:
            message.channel.qos.put_back(message.delivery_tag)
        except Exception as exc:  # Redis unreachable: its lease brings it back
            logger.warning("Job %s waits for a free process; it goes back when its lease lapses: %s", request.id, exc)
            return
        logger.info("Job %s waited %.2f s for a free process: put back in its queue", request.id, WAIT)


def _request(waiter: tuple[Any, ...]) -> Any:
    """The request of a semaphore waiter ``(callback, args, kwargs)``: ``WorkController._process_task(req)``."""
    args = waiter[1] if len(waiter) > 1 else ()
    return args[0] if args and hasattr(args[0], "message") else None
