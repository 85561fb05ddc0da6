"""Worker heartbeat: a key per worker process that expires by itself (read by ``doctor``).

A thread in the worker's main process refreshes ``worker:<name>`` (queues, pid, host, concurrency,
start time, jobs done/failed) and the ``workers`` index every INTERVAL seconds; the key expires
after TTL, so a worker that died is seen as gone without any cleanup.

The thread has its own connection, so a fresh heartbeat alone would not prove that the worker
works: ``loop_turn`` is the last time the worker's event loop (which takes, starts and finishes
jobs) ran a timer of ours, every TURN_EVERY seconds. ``doctor`` shows a worker whose loop has not
turned for STUCK_AFTER seconds as stuck (diagnostics/workers.py), whether its loop is blocked or
the whole process is cut off from Redis.
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
TURN_EVERY = 1.0
STOP_WAIT = 2.0

logger = logging.getLogger("benchcelery.worker")


class Heartbeat(bootsteps.StartStopStep):
    """Worker-blueprint step: starts the heartbeat thread with the worker, stops it on shutdown."""

    requires = ("celery.worker.components:Pool",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.stopped = threading.Event()
        self.thread: threading.Thread | None = None
        self.started = time.time()
        self.loop_turn = time.time()
        self.reached = True  # the last heartbeat was written

    def start(self, worker: Any) -> None:
        self.worker = worker
        self.facts = {
            "name": worker.hostname,
            "queues": self.queues(),
            "pid": os.getpid(),
            "host": worker.hostname.rpartition("@")[2] or socket.gethostname(),  # hosts.host_name()
            "concurrency": worker.concurrency,
            "pool": "solo" if getattr(worker.pool, "runs_inline", False) else "prefork",  # jobs/ops.py cancel
            "started": self.started,
        }
        hub = getattr(worker, "hub", None)
        if hub is not None:  # no event loop: loop_turn is the heartbeat's own time
            hub.call_repeatedly(TURN_EVERY, self.turned)
        self.beat()
        self.thread = threading.Thread(target=self.run, name="benchcelery-heartbeat", daemon=True)
        self.thread.start()

    def stop(self, worker: Any) -> None:
        self.stopped.set()
        if not self.reached:  # Redis out of reach: the key expires by itself (no wait at shutdown)
            return
        # At most STOP_WAIT s: a shutdown during a network outage must not wait for a read timeout.
        remover = threading.Thread(target=self.remove, name="benchcelery-heartbeat-stop", daemon=True)
        remover.start()
        remover.join(STOP_WAIT)

    def remove(self) -> None:
        try:
            rt = get_runtime()
            pipe = rt.redis.pipeline()
            pipe.delete(rt.keys.worker(self.facts["name"]))
            pipe.zrem(rt.keys.workers, self.facts["name"])
            pipe.execute()
        except Exception as exc:
            logger.warning("Could not remove the worker heartbeat (it expires by itself): %s", exc)

    def run(self) -> None:
        while not self.stopped.wait(INTERVAL):
            try:
                self.beat()
            except Exception as exc:
                if self.reached:  # said once per outage
                    logger.warning("Heartbeat failed: %s", exc)
                self.reached = False
            else:
                self.reached = True

    def turned(self) -> None:
        self.loop_turn = time.time()

    def queues(self) -> str:
        """The queues consumed now (``control add_consumer`` / ``cancel_consumer`` change them)."""
        # sorted() copies the names in one step (the consumer thread may change them meanwhile)
        return json.dumps(sorted(self.worker.app.amqp.queues.consume_from or []))

    def beat(self) -> None:
        rt = get_runtime()
        now = time.time()
        busy = getattr(self.worker.pool, "busy", None)
        if getattr(self.worker, "hub", None) is None or (busy is not None and busy()):
            self.loop_turn = now  # (--pool solo: a job running in the loop's thread is work, not a stuck loop)
        self.facts["queues"] = self.queues()
        key = rt.keys.worker(self.facts["name"])
        pipe = rt.redis.pipeline()
        pipe.hset(
            key,
            mapping={
                **self.facts,
                "last_heartbeat": now,
                "loop_turn": self.loop_turn,
                "done": state.all_total_count[0],
            },
        )
        pipe.expire(key, TTL)
        pipe.zadd(rt.keys.workers, {self.facts["name"]: now})
        pipe.execute()
