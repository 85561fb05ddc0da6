"""A consumer bootstep that runs ``check(consumer)`` every ``interval`` seconds in the worker's event loop."""

from __future__ import annotations

from typing import Any

from celery import bootsteps


class Periodic(bootsteps.StartStopStep):
    requires = ("celery.worker.consumer.tasks:Tasks",)
    interval = 1.0
    tref: Any = None

    def start(self, c: Any) -> None:
        self.tref = c.timer.call_repeatedly(self.interval, self.check, (c,), priority=10)

    def stop(self, c: Any) -> None:
        if self.tref is not None:
            self.tref.cancel()
            self.tref = None

    def check(self, c: Any) -> None:
        raise NotImplementedError
