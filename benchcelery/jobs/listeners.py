"""Who wants to know how a job ended: a tiny registry the engine calls and higher layers fill.

The engine (``jobs/execute.py``) must not know the scheduler, so it only calls ``job_finished``;
the scheduler's run log subscribes with ``on_job_finished`` when it is imported (a worker imports it
at start: ``runtime.TASK_MODULES``). A listener that raises is logged and never affects the job.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

Listener = Callable[[dict[str, Any], "str | None"], None]
_listeners: list[Listener] = []


def on_job_finished(listener: Listener) -> Listener:
    """Call ``listener(meta, error)`` after every job that carries an event (``error`` None = success)."""
    if listener not in _listeners:
        _listeners.append(listener)
    return listener


def job_finished(meta: dict[str, Any], error: str | None) -> None:
    for listener in list(_listeners):
        try:
            listener(meta, error)
        except Exception:
            name = getattr(listener, "__name__", listener)
            logger.exception("Listener %s failed for job %s", name, meta.get("job_id"))
