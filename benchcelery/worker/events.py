"""Celery events on bench workers: an event dispatcher always, task events and heartbeats on demand.

Every worker keeps an event dispatcher, so ``celery control enable_events`` (what Flower sends every
few seconds) works at run time; without ``--events`` it starts with only the ``worker`` group, so
task events cost one set lookup each. Celery's event heartbeats (``worker-heartbeat`` every 2 s,
which Flower's online/offline relies on) are sent only while task events are on, so a worker that
nobody watches publishes nothing.

Also here: the answer to ``celery control rate_limit|time_limit <method>``. Every job runs through
one Celery task (``benchcelery.execute_job``), so a limit per job method cannot be set at run time;
the command answers with what to do instead rather than "unknown task".
"""

from __future__ import annotations

from typing import Any

from celery.worker import control
from celery.worker import heartbeat as celery_heartbeat
from celery.worker.consumer import heart

PER_METHOD_LIMITS = (
    "{what} applies to Celery tasks; every bench job runs as the task benchcelery.execute_job "
    "(a limit on it applies to all jobs of this worker). For one method: a rate with rate_limits "
    "in common_site_config.json or @benchcelery.rate_limit on the function (bench-wide, all "
    "workers); a time with the job's timeout (enqueue(..., timeout=S)) or workers.<queue>.timeout."
)


def task_events_on(dispatcher: Any) -> bool:
    groups = getattr(dispatcher, "groups", None)
    return bool(getattr(dispatcher, "enabled", False)) and (not groups or "task" in groups)


class GatedHeart(celery_heartbeat.Heart):
    """Celery's event heartbeat, silent while task events are off."""

    def _send(self, event: str, retry: bool = True) -> Any:
        if not task_events_on(self.eventer):
            return None
        return super()._send(event, retry)


class Heart(heart.Heart):
    """Consumer step replacing Celery's Heart (see Consumer.Blueprint in consumer.py)."""

    def start(self, c: Any) -> None:
        c.heart = GatedHeart(c.timer, c.event_dispatcher, self.heartbeat_interval)
        c.heart.start()


def _refuse_unknown_task(name: str, original: Any) -> Any:
    def command(state: Any, task_name: str, *args: Any, **kwargs: Any) -> Any:
        if task_name not in state.app.tasks:
            return control.nok(PER_METHOD_LIMITS.format(what=f"{name} {task_name}"))
        return original(state, task_name, *args, **kwargs)

    command.__name__ = command.__qualname__ = name
    command.__doc__ = original.__doc__
    return command


def install_control_answers() -> None:
    """Replace the worker's ``rate_limit`` / ``time_limit`` commands with ones that explain per-method
    limits instead of answering "unknown task" (the argument signatures stay Celery's)."""
    for name in ("rate_limit", "time_limit"):
        original = control.Panel.data[name]
        if getattr(original, "_benchcelery", False):
            continue
        wrapped = _refuse_unknown_task(name, original)
        wrapped._benchcelery = True  # type: ignore[attr-defined]
        control.Panel.data[name] = wrapped
