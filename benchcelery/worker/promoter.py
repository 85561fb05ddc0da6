"""Worker-blueprint step: every worker moves due delayed jobs (run-later jobs, retries) to their
queues, in a thread (broker/delayed.py ``Promoter``) that costs no Redis command while nothing is due."""

from __future__ import annotations

from typing import Any

from celery import bootsteps

from benchcelery.broker.delayed import Promoter
from benchcelery.runtime import get_runtime


class Promote(bootsteps.StartStopStep):
    requires = ("celery.worker.components:Pool",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.promoter: Promoter | None = None

    def start(self, worker: Any) -> None:
        rt = get_runtime()
        self.promoter = Promoter(rt.redis, rt.keys)
        self.promoter.start()

    def stop(self, worker: Any) -> None:
        if self.promoter is not None:
            self.promoter.stop()
