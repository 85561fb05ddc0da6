"""What the transport needs from the layers above it, given to it by them.

The transport records a malformed message it removes from a queue, and asks which jobs the
worker runs now and whether it is stopping (which taken jobs to give back when a connection is
lost, whether a finished job's ack can wait for the next poll). Those answers belong to the job
engine and to Celery's worker, which sit above the broker layer: jobs/execute.py sets them when
it loads (in every worker, and in any process when its Celery app is finalized), so this layer
imports neither. The defaults are what holds in a process that is not a worker: nothing runs,
nothing stops, and a malformed message is only logged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

logger = logging.getLogger("benchcelery.broker.delivery")


def _log_malformed(queue: str, raw: bytes, reason: str, tag: str) -> None:
    logger.error("Removed a malformed message from queue %s (%s): %s", queue, tag, reason)


def _nothing_running() -> set[str]:
    return set()


def _not_stopping() -> bool:
    return False


def _never_busy() -> float | None:
    return None


@dataclass
class Hooks:
    record_malformed: Callable[[str, bytes, str, str], None] = _log_malformed  # (queue, raw, reason, tag)
    running_tags: Callable[[], set[str]] = _nothing_running  # delivery tags of the jobs running now
    shutting_down: Callable[[], bool] = _not_stopping  # the worker is stopping (warm or cold)
    # Monotonic time the event loop was last busy running a job in its own thread (`bench worker
    # --pool solo`: now while one runs), else None. Set by worker/solo.py; the lease thread counts
    # it as a turn of the loop (a long job there is work, not a stalled loop).
    inline_busy: Callable[[], float | None] = _never_busy


hooks = Hooks()
