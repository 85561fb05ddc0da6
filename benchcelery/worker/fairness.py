"""Worker-blueprint step: writes the sites' weights, caps and rate limits to Redis when the worker
starts and every POLICY_INTERVAL seconds after (jobs/fairness.py), so an edit of a site's config
takes effect within that time on every worker."""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery import bootsteps

from benchcelery.jobs.fairness import POLICY_INTERVAL, sync_policy
from benchcelery.runtime import get_runtime

logger = logging.getLogger("benchcelery.worker")


class SitePolicy(bootsteps.StartStopStep):
    requires = ("celery.worker.components:Pool",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.stopped = threading.Event()
        self.reported: list[str] = []

    def start(self, worker: Any) -> None:
        self.sync()
        threading.Thread(target=self.run, name="benchcelery-site-policy", daemon=True).start()

    def stop(self, worker: Any) -> None:
        self.stopped.set()

    def run(self) -> None:
        while not self.stopped.wait(POLICY_INTERVAL):
            self.sync()

    def sync(self) -> None:
        try:
            rt = get_runtime()
            problems = sync_policy(rt.redis, rt.keys, rt.bench, rt.settings.queues)
        except Exception:  # Redis unreachable: the previous policy stays; try again later
            logger.warning("Could not write the sites' queue policy", exc_info=True)
            return
        if problems != self.reported:
            for problem in problems:
                logger.warning("Queue policy ignored: %s", problem)
            self.reported = problems
