"""``--burst``: a consumer bootstep that stops the worker once its queues are drained.

Every second (in the worker's event loop) it checks that nothing is running or reserved and that
every consumed queue is empty; after two idle checks in a row it requests Celery's own warm
shutdown, which restores any message caught in flight and exits 0.
"""

from __future__ import annotations

import sys
from typing import Any

from celery import bootsteps
from celery.worker import state

IDLE_CHECKS = 2
CHECK_INTERVAL = 0.25


class Burst(bootsteps.StartStopStep):
    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, parent: Any, burst: bool = False, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.enabled = bool(burst)
        self.idle = 0
        self.tref: Any = None

    def start(self, c: Any) -> None:
        self.tref = c.timer.call_repeatedly(CHECK_INTERVAL, self.check, (c,), priority=10)

    def stop(self, c: Any) -> None:
        if self.tref is not None:
            self.tref.cancel()
            self.tref = None

    def check(self, c: Any) -> None:
        busy = len(state.active_requests) + len(state.reserved_requests)
        if busy or any(c.task_consumer.channel._size(q.name) for q in c.task_consumer.queues):
            self.idle = 0
            return
        self.idle += 1
        if self.idle >= IDLE_CHECKS and state.should_stop is None:
            print(f"Worker {c.hostname}: done, quitting", file=sys.stderr, flush=True)
            state.should_stop = 0
