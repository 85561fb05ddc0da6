"""Worker heartbeat: a key per worker process that expires by itself (read by ``doctor``).

A thread in the worker's main process refreshes ``worker:<name>`` (queues, pid, host, concurrency,
start time, jobs done/failed) and the ``workers`` index every INTERVAL seconds; the key expires
after TTL, so a worker that died is seen as gone without any cleanup.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from typing import Any

from celery import bootsteps
from celery.worker import state

from benchcelery.runtime import get_runtime

INTERVAL = 10.0
TTL = 30

logger = logging.getLogger("benchcelery.worker")


class Heartbeat(bootsteps.StartStopStep):
    """Worker-blueprint step: starts the heartbeat thread with the worker, stops it on shutdown."""

    requires = ("celery.worker.components:Pool",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.stopped = threading.Event()
        self.thread: threading.Thread | None = None
        self.started = time.time()

    def start(self, worker: Any) -> None:
        self.worker = worker
        self.facts = {
            "name": worker.hostname,
            "queues": self.queues(),
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "concurrency": worker.concurrency,
            "started": self.started,
        }
        self.beat()
        self.thread = threading.Thread(target=self.run, name="benchcelery-heartbeat", daemon=True)
        self.thread.start()

    def stop(self, worker: Any) -> None:
        self.stopped.set()
        try:
            rt = get_runtime()
            pipe = rt.redis.pipeline()
            pipe.delete(rt.keys.worker(self.facts["name"]))
            pipe.zrem(rt.keys.workers, self.facts["name"])
            pipe.execute()
        except Exception:
            logger.warning("Could not remove the worker heartbeat", exc_info=True)

    def run(self) -> None:
        while not self.stopped.wait(INTERVAL):
            try:
                self.beat()
            except Exception:
                logger.warning("Heartbeat failed", exc_info=True)

    def queues(self) -> str:
        """The queues consumed now (``control add_consumer`` / ``cancel_consumer`` change them)."""
        # sorted() copies the names in one step (the consumer thread may change them meanwhile)
        return json.dumps(sorted(self.worker.app.amqp.queues.consume_from or []))

    def beat(self) -> None:
        rt = get_runtime()
        now = time.time()
        self.facts["queues"] = self.queues()
        key = rt.keys.worker(self.facts["name"])
        pipe = rt.redis.pipeline()
        pipe.hset(key, mapping={**self.facts, "last_heartbeat": now, "done": state.all_total_count[0]})
        pipe.expire(key, TTL)
        pipe.zadd(rt.keys.workers, {self.facts["name"]: now})
        pipe.execute()
