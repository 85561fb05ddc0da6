"""``bench worker --pool solo``: jobs run in the worker's own process, in its main thread.

No pool process: no pickling, no pipes, no result handler, one process to keep in memory. What
changes for the rest of the worker:

- **Timeout.** The job arms its own alarm (jobs/deadline.py): ``SoftTimeLimitExceeded`` at its
  timeout, recorded as a timeout like any other. A job stuck inside C code cannot be stopped (no
  process to kill): a hard limit needs ``--pool prefork``.
- **Leases.** The event loop does not turn while a job runs in it. The lease thread judges a loop
  that has not turned for a lease stalled and stops renewing its jobs; a job running in the loop's
  own thread is work, not a stall, so the loop counts as turning while one runs (``busy_at``,
  given to the transport through broker/hooks.py) and the job keeps its lease however long it runs.
- **Terminating a job** (``bench jobs cancel --terminate``) would mean killing the worker itself:
  refused (jobs/ops.py asks the worker's heartbeat which pool it runs); the job stops at its
  timeout, or with the worker.
- **Stopping.** TERM lets the running job finish (as with prefork); a second TERM cannot stop it
  early (it runs in this thread), so it only says so. KILL stops it: its lease brings it back.
- ``--max-jobs-per-child`` / ``--max-memory-per-child`` have no child to replace (refused by the CLI).
"""

from __future__ import annotations

import logging
from time import monotonic
from typing import Any

from celery.concurrency import solo
from celery.concurrency.base import apply_target

from benchcelery.broker.hooks import hooks
from benchcelery.jobs import deadline

logger = logging.getLogger("benchcelery.worker")


class TaskPool(solo.TaskPool):
    """Celery's solo pool that tells the lease thread when a job runs in the loop's thread."""

    runs_inline = True  # read by the consumer (no job held ahead), burst and the heartbeat

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.running_since: float | None = None
        self.last_done: float | None = None
        self.on_apply = self._apply
        deadline.in_process = True
        hooks.inline_busy = self.busy_at

    def _apply(self, target: Any, args: Any = (), kwargs: Any = None, **options: Any) -> Any:
        self.running_since = monotonic()
        try:
            return apply_target(target, args, kwargs, **options)
        finally:
            self.last_done = monotonic()
            self.running_since = None

    def busy(self) -> bool:
        """Whether a job runs now (in this process's main thread)."""
        return self.running_since is not None

    def busy_at(self) -> float | None:
        """Monotonic time the event loop was last busy with a job: now while one runs, else when the
        last one ended (None before the first)."""
        return monotonic() if self.running_since is not None else self.last_done

    def terminate_job(self, pid: int, signal: Any = None) -> None:
        # Celery's solo pool raises NotImplementedError here, from within a signal handler during a
        # cold shutdown (cancel_active_requests): that would fail the running job with it.
        logger.warning("A job running in the worker's own process (--pool solo) cannot be terminated; it runs on")

    def _get_info(self) -> dict[str, Any]:
        info: dict[str, Any] = super()._get_info()
        info["pool"] = "solo"
        return info
