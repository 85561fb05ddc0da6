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
worker is killed: they never ran, so they run once. A worker stalled (or cut off from Redis) past
the lease of a job it holds ahead does not start it afterwards: the transport checks the job is
still its own right before the pool gets it (transport.Channel.may_start, asked through
JobRequest.revoked), so its new holder alone runs it.
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
        # The acks of finished jobs ride in the next fetch, which waits for the jobs a batch holds
        # here to start (poll.py): one held behind a long job has them applied here instead.
        settle = getattr(getattr(c.task_consumer, "channel", None), "settle_acks", None)
        if settle is not None:
            settle()
        semaphore = getattr(c.controller, "semaphore", None)
        waiting = _waiting(semaphore)
        if not waiting and not self.first_seen and self.on:
            return  # the common case of a busy worker of short jobs: nothing to look at
        now = monotonic()
        requests = [request for _, request in waiting] + list(state.active_requests)
        seen = self.first_seen = {r.id: self.first_seen.get(r.id, now) for r in requests}
        if state.should_stop is not None or state.should_terminate is not None:
            return  # shutting down: what waits goes back with restore_unacked
        for waiter, request in waiting:
            if now - seen[request.id] >= WAIT:
                self._give_back(semaphore, waiter, request)
        long_running = any(now - seen[r.id] >= WAIT for r in state.active_requests)
        if long_running == self.on:  # hold none ahead while a job runs long, one again after
            self.on = not long_running
            (c.qos.increment_eventually if self.on else c.qos.decrement_eventually)(c.ahead)
            c.qos.update()

    def _give_back(self, semaphore: Any, waiter: tuple[Any, ...], request: Any) -> None:
        """Put a request that waits for a free process back in its queue (next to be taken)."""
        semaphore._waiting.remove(waiter)
        state.task_ready(request)
        message = request.message
        message._state = "REQUEUED"
        try:
            message.channel.qos.put_back(message.delivery_tag)
        except Exception as exc:  # Redis unreachable: its lease brings it back
            logger.warning("Job %s waits for a free process; it goes back when its lease lapses: %s", request.id, exc)
            return
        logger.info("Job %s waited %.2f s for a free process: put back in its queue", request.id, WAIT)


def _waiting(semaphore: Any) -> list[tuple[tuple[Any, ...], Any]]:
    """(waiter, request) of the requests waiting in the pool's semaphore for a free process; a waiter is
    ``(callback, args, kwargs)``, here ``WorkController._process_task(request)``."""
    pairs = []
    for waiter in getattr(semaphore, "_waiting", ()):
        args = waiter[1] if len(waiter) > 1 else ()
        if args and hasattr(args[0], "message"):
            pairs.append((waiter, args[0]))
    return pairs
