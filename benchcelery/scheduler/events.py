"""Apps' ``scheduler_events`` hooks -> scheduled jobs, and the due-time rules (pure functions).

Frappe's format::

    scheduler_events = {
        "all": ["app.tasks.flush"],                 # every ``scheduler_interval`` seconds (240)
        "hourly": [...], "daily": [...], "weekly": [...], "monthly": [...], "yearly": [...],
        "hourly_long": [...], ...                   # *_long -> the long queue
        "hourly_maintenance": [...], "daily_maintenance": [...],   # newer Frappe: the long queue
        "cron": {"0/15 * * * *": ["app.tasks.sync"]},
        "cron_long": {"0 2 * * *": ["app.tasks.backup"]},   # the long queue (any dict-valued key
    }                                                       # ending _long or _maintenance)

Cron expressions are croniter's (Frappe's): 5 fields, an optional 6th for seconds, ``0/15``,
``@daily``... evaluated in the bench ``time_zone``. A due time is always the next slot after the
last run (or after the job was first seen), so a new job never fires at once and missed slots
are never replayed.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import sys
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, tzinfo
from functools import lru_cache
from typing import Any

from croniter import croniter

from benchcelery.errors import BenchError
from benchcelery.jobs.hooks import app_hooks
from benchcelery.jobs.methods import resolve
from benchcelery.scheduler import JOB_ID_PREFIX

ALL = "all"
CRON_EVENTS = ("cron", "cron_long")
EVENT_CRON: dict[str, str] = {
    "hourly": "0 * * * *",
    "daily": "0 0 * * *",
    "weekly": "0 0 * * 0",
    "monthly": "0 0 1 * *",
    "yearly": "0 0 1 1 *",
    "annual": "0 0 1 1 *",
}
# Newer Frappe's maintenance frequencies; they run on the long queue.
MAINTENANCE_EVENTS = ("hourly_maintenance", "daily_maintenance")
LONG_SUFFIXES = ("_long", "_maintenance")
# Every event type a user may name (trigger-scheduler-event, purge-jobs --event).
EVENT_TYPES: tuple[str, ...] = (
    ALL,
    *EVENT_CRON,
    *(f"{e}_long" for e in ("hourly", "daily", "weekly", "monthly", "yearly")),
    *MAINTENANCE_EVENTS,
    *CRON_EVENTS,
)
SEP = "::"


@dataclass(frozen=True)
class ScheduledJob:
    """One scheduled job of an app (the same for every site)."""

    app: str
    event: str  # all, daily, hourly_long, cron, cron_long, ...
    method: str
    cron: str | None  # the expression; None for "all" (an interval)

    @property
    def queue(self) -> str:
        return "long" if self.event.endswith(LONG_SUFFIXES) else "default"

    @property
    def job_id(self) -> str:
        """Deterministic run id: a job is never queued twice while a run is queued or running."""
        return f"{JOB_ID_PREFIX}{self.method}"

    @property
    def name(self) -> str:
        """Site-independent name: ``<event>::<method>`` (cron: ``::<expr>`` appended)."""
        parts = [self.event, self.method] + ([self.cron] if self.event in CRON_EVENTS and self.cron else [])
        return SEP.join(parts)

    def entry_name(self, site: str) -> str:
        return f"{site}{SEP}{self.name}"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "queue": self.queue, "name": self.name}


@dataclass(frozen=True)
class Problem:
    """A hook entry that cannot be scheduled (reported, the other jobs still run)."""

    app: str
    event: str
    method: str
    error: str

    def __str__(self) -> str:
        return f"{self.app}: {self.event} {self.method}: {self.error}"


def cron_error(expr: Any) -> str | None:
    """Why ``expr`` is not a valid cron expression, or None when it is."""
    if not isinstance(expr, str) or not expr.strip():
        return "Cron format is required"
    if SEP in expr or not croniter.is_valid(expr):
        return f"{expr} is not a valid Cron expression"
    return None


def parse_scheduler_events(app: str, events: Any) -> tuple[list[ScheduledJob], list[Problem]]:
    """One app's ``scheduler_events`` value -> its jobs and the problems found (no imports here)."""
    jobs: list[ScheduledJob] = []
    problems: list[Problem] = []
    if not events:
        return jobs, problems
    if not isinstance(events, dict):
        return jobs, [Problem(app, "", "", "scheduler_events must be a dict")]
    for event, value in events.items():
        if isinstance(value, dict):
            # Frappe: any dict-valued key is cron; a *_long or *_maintenance one goes to the long
            # queue here (newer Frappe puts maintenance jobs there).
            kind = "cron_long" if str(event).endswith(LONG_SUFFIXES) else "cron"
            for expr, methods in value.items():
                error = cron_error(expr)
                for method in _methods(methods):
                    if error:
                        problems.append(Problem(app, kind, method, error))
                    else:
                        jobs.append(ScheduledJob(app, kind, method, " ".join(expr.split())))
        elif event in EVENT_TYPES and event not in CRON_EVENTS:
            cron = EVENT_CRON.get(event.removesuffix("_long").removesuffix("_maintenance"))
            for method in _methods(value):
                jobs.append(ScheduledJob(app, event, method, cron))
        else:
            for method in _methods(value) or [""]:
                problems.append(Problem(app, str(event), method, f"unknown event type {event!r}"))
    return jobs, problems


def _methods(value: Any) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple):
        return []
    return [str(m).strip() for m in value if str(m).strip()]


def load_jobs(
    apps: Iterable[str], extra_methods: Iterable[str] = (), reload: bool = False, check_methods: bool = True
) -> tuple[list[ScheduledJob], list[Problem]]:
    """Every installed app's scheduled jobs (apps.txt order) and the problems found.

    A method that cannot be imported (or is outside the installed apps) is a problem, not a job.
    With ``reload`` the hooks modules are re-read from disk.
    """
    apps = list(apps)
    extra = list(extra_methods)
    jobs: list[ScheduledJob] = []
    problems: list[Problem] = []
    seen: set[str] = set()
    for app in apps:
        try:
            module = _hooks_module(app, reload)
        except Exception as exc:
            problems.append(Problem(app, "", "", f"hooks cannot be imported: {type(exc).__name__}: {exc}"))
            continue
        value = getattr(module, "scheduler_events", None) if module else None
        found, bad = parse_scheduler_events(app, value)
        problems.extend(bad)
        for job in found:
            if job.name in seen:
                continue  # the same job listed twice (or by two apps) runs once
            if check_methods:
                try:
                    resolve(job.method, apps, extra)
                except BenchError as exc:
                    problems.append(Problem(app, job.event, job.method, str(exc)))
                    continue
            seen.add(job.name)
            jobs.append(job)
    return jobs, problems


def _hooks_module(app: str, reload: bool) -> Any:
    if reload:
        # A hooks.py rewritten within the same second with the same size would otherwise be
        # served from its stale .pyc (which records only the source's mtime in seconds and size).
        importlib.invalidate_caches()
        module = sys.modules.get(f"{app}.hooks")
        origin = getattr(module, "__file__", None)
        if origin and origin.endswith(".py"):
            with contextlib.suppress(OSError):
                os.unlink(importlib.util.cache_from_source(origin))
    return app_hooks(app, reload=reload)


def hooks_files(apps: Iterable[str]) -> list[str]:
    """The hooks.py path of each app that has one (for change detection)."""
    paths = []
    for app in apps:
        module = sys.modules.get(f"{app}.hooks")
        origin = getattr(module, "__file__", None)
        if origin is None:
            try:
                spec = importlib.util.find_spec(f"{app}.hooks")
            except (ImportError, ValueError):
                spec = None
            origin = spec.origin if spec else None
        if origin:
            paths.append(origin)
    return paths


# --- due-time rules (pure: no Redis, no clock) ---


def next_run(job: ScheduledJob, after: datetime, interval: float, tz: tzinfo) -> datetime:
    """The first slot of ``job`` strictly after ``after`` (aware), in ``tz``.

    ``all`` jobs run every ``interval`` seconds from their last run; the others follow their cron
    expression in the bench time zone.
    """
    if job.cron is None:
        return after + timedelta(seconds=interval)
    return cron_next(job.cron, after, tz)


def is_due(job: ScheduledJob, last_run: datetime, now: datetime, interval: float, tz: tzinfo) -> bool:
    """Frappe's rule: due when the next slot after the last run (or creation) is not in the future."""
    return next_run(job, last_run, interval, tz) <= now


def cron_next(expr: str, after: datetime, tz: tzinfo) -> datetime:
    if after.tzinfo is None:
        raise ValueError("cron_next needs an aware datetime")
    return _cron_next(expr, after.astimezone(tz))


@lru_cache(maxsize=4096)
def _cron_next(expr: str, after: datetime) -> datetime:
    # Cached: a reconcile scores thousands of entries created at the same instant.
    result: datetime = croniter(expr, after).get_next(datetime)
    return result
