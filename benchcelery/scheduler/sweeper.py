"""The scheduler's lease sweeper: jobs of dead workers go back to their queue even when no other
worker is alive to sweep them.

A thread started by beat's first tick (``start``) and stopped when the scheduler closes
(``stop``); a standby waiting for the lock leaves sweeping to the active beat and the workers.
Renewals are the workers' business: this process holds no jobs. While Redis is unreachable the
failure is logged once, and once more when sweeping works again.
"""

from __future__ import annotations

import logging
import threading
import time

import redis

from benchcelery.broker.delayed import Promoter
from benchcelery.broker.delivery import SWEEP_INTERVAL, Delivery, Sweeper

logger = logging.getLogger("benchcelery.scheduler")


class LeaseSweeper:
    """Recovers lapsed job leases every ``min(lease / 3, SWEEP_INTERVAL)`` s in a daemon thread."""

    def __init__(self, delivery: Delivery, lease: int) -> None:
        self.delivery = delivery
        self.sweeper = Sweeper(lease)
        self.interval = min(lease / 3, SWEEP_INTERVAL)
        self.stopped = threading.Event()
        self.outage = False  # the last sweep found Redis unreachable
        self._thread: threading.Thread | None = None
        self._promoter: Promoter | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the thread (once; a no-op when it runs already or was stopped)."""
        if self._thread is not None or self.stopped.is_set():
            return
        self._thread = threading.Thread(target=self._run, name="benchcelery-leases", daemon=True)
        self._thread.start()
        # Delayed jobs and retries: this process moves them at least every second (workers when due).
        self._promoter = Promoter(self.delivery.r, self.delivery.keys, refresh=1.0)
        self._promoter.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread and wait for it (at most ``timeout`` s: a sweep in flight may be slow)."""
        self.stopped.set()
        if self._promoter is not None:
            self._promoter.stop()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _run(self) -> None:
        while not self.stopped.wait(self.interval):
            if self.sweeper.cut:  # contact lost: the grace before sweeping runs from a call that succeeds
                self.probe()
            self.sweeper.maybe_sweep(self)  # type: ignore[arg-type]  # only ``recover`` is used

    def probe(self) -> None:
        """A PING: tells the sweeper whether (and since when) Redis is reachable again."""
        started = time.monotonic()
        try:
            self.delivery.r.ping()
        except redis.RedisError:
            self.sweeper.lost_contact()
        else:
            self.sweeper.timed(started)

    def recover(self) -> list[str]:
        """``Delivery.recover``, with an unreachable Redis logged once per outage (then [])."""
        try:
            tags = self.delivery.recover()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            self.sweeper.lost_contact()
            if not self.outage:
                self.outage = True
                logger.warning("Could not recover lapsed job leases, Redis is unreachable: %s", exc)
            return []
        if self.outage:
            self.outage = False
            logger.info("Redis is reachable again: recovering lapsed job leases")
        return tags
