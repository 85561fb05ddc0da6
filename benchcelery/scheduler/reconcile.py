"""Keeping RedBeat's entries equal to the apps' hooks x the bench's sites.

One RedBeat entry per (site, scheduled job), named ``<site>::<event>::<method>[::<cron>]``. A
reconcile adds new entries, rewrites changed ones and deletes gone ones. It runs (from the active
beat's tick, after the lock is ours) whenever the site list, apps.txt, a hooks.py,
``scheduler_interval`` or ``time_zone`` changes, when the number of entries in Redis is not the
expected one (a flush, a hand deletion) and every RECONCILE_EVERY s.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from benchcelery.bench.config import DEFAULTS
from benchcelery.bench.keys import Keys
from benchcelery.bench.layout import Bench
from benchcelery.scheduler.events import ScheduledJob, hooks_files, load_jobs, next_run
from benchcelery.scheduler.schedules import decode_meta, encode_meta, encode_schedule, zone
from benchcelery.scheduler.state import SiteStates
from benchcelery.scheduler.timing import RECONCILE_EVERY, RECOUNT_EVERY

logger = logging.getLogger("benchcelery.scheduler")

BATCH = 1000  # entries per pipeline


@dataclass
class ReconcileStats:
    added: int = 0
    changed: int = 0
    removed: int = 0
    entries: int = 0
    problems: list[str] = field(default_factory=list)


@dataclass
class Plan:
    """The entries hooks x sites call for, and the schedule settings they were built with."""

    interval: float
    tz_name: str
    jobs: list[ScheduledJob]
    problems: list[str]
    hooks_failed: bool  # an app's hooks did not import: its entries must not be taken as gone
    entries: dict[str, tuple[str, ScheduledJob]] = field(default_factory=dict)  # entry key -> (site, job)
    definitions: dict[str, str] = field(default_factory=dict)  # entry key -> RedBeat definition (JSON)


class Reconciler:
    """Writes RedBeat's entries from hooks x sites and remembers what it wrote (``desired``), the
    schedule settings in force (``interval``, ``tz_name``) and when it last ran."""

    def __init__(self, bench: Bench, keys: Keys, states: SiteStates) -> None:
        self.bench = bench
        self.keys = keys
        self.states = states
        self.jobs: list[ScheduledJob] = []
        self.desired: dict[str, tuple[str, ScheduledJob]] = {}  # entry key -> (site, job)
        self.interval = float(DEFAULTS["scheduler_interval"])
        self.tz_name = "UTC"
        self.fingerprint: Any = None
        self.last_reconcile = 0.0
        self.reconciled = False  # a reconcile succeeded: entries unknown to it are stale
        self._problems: list[str] | None = None

    @property
    def tz(self) -> Any:
        return zone(self.tz_name)

    def needed(self, sites_changed: bool, fingerprint: Any, count: int) -> bool:
        """Is a reconcile due, given what changed and how many entries Redis holds?"""
        since = time.monotonic() - self.last_reconcile
        # A count that differs from what we wrote means entries were lost (flush, failover) or
        # added behind our back; re-check soon, but not every tick.
        return (
            sites_changed
            or fingerprint != self.fingerprint
            or since > RECONCILE_EVERY
            or (count != len(self.desired) and since > RECOUNT_EVERY)
        )

    def reconcile(self, r: Any, reload_hooks: bool = True) -> ReconcileStats:
        """Make the RedBeat entries match hooks x sites: add new, update changed, delete gone.

        New entries start from now (a new job waits for its next slot); changed ones keep their
        last run. Problems (bad cron, unimportable method, unknown event) are logged once and
        stored for ``scheduler status --verbose``.
        """
        plan = plan_entries(self.bench, self.states.common, self.states.sites, self.keys, reload_hooks)
        self.interval, self.tz_name, self.jobs = plan.interval, plan.tz_name, plan.jobs
        stats = write_entries(r, self.keys, plan, problems_changed=plan.problems != self._problems)
        self._problems = plan.problems
        self.desired = plan.entries
        self.reconciled = True
        self.last_reconcile = time.monotonic()
        if stats.added or stats.changed or stats.removed:
            logger.info(
                "Schedule reconciled: %d entries (%d added, %d changed, %d removed) for %d sites",
                stats.entries,
                stats.added,
                stats.changed,
                stats.removed,
                len(self.states.sites),
            )
        return stats


def schedule_settings(common: dict[str, Any]) -> tuple[float, str, list[str]]:
    """``scheduler_interval`` (s) and ``time_zone`` from common config, with the problems found."""
    try:
        interval = float(common.get("scheduler_interval") or DEFAULTS["scheduler_interval"])
    except (TypeError, ValueError):
        interval = float(DEFAULTS["scheduler_interval"])
    problems: list[str] = []
    tz_name = str(common.get("time_zone") or DEFAULTS["time_zone"])
    try:
        zone(tz_name)
    except ValueError as exc:
        problems.append(f"bench: {exc}; using UTC")
        tz_name = "UTC"
    return interval, tz_name, problems


def plan_entries(bench: Bench, common: dict[str, Any], sites: list[str], keys: Keys, reload_hooks: bool) -> Plan:
    """The entries the apps' hooks call for on ``sites`` (hooks re-imported if ``reload_hooks``)."""
    interval, tz_name, problems = schedule_settings(common)
    extra = common.get("allowed_methods") or []
    extra = extra if isinstance(extra, list) else []
    jobs, bad = load_jobs(bench.apps(), extra, reload=reload_hooks)
    problems.extend(str(p) for p in bad)
    plan = Plan(interval, tz_name, jobs, problems, hooks_failed=any(not p.event for p in bad))
    for job in jobs:
        schedule = encode_schedule(job.cron, interval, tz_name)
        for site in sites:
            name = job.entry_name(site)
            key = keys.redbeat_entry(name)
            plan.entries[key] = (site, job)
            plan.definitions[key] = entry_definition(name, site, job, schedule)
    return plan


def entry_definition(name: str, site: str, job: ScheduledJob, schedule: Any) -> str:
    """RedBeat's ``definition`` field for ``job`` on ``site`` (canonical JSON, compared as text)."""
    return json.dumps(
        {
            "name": name,
            "task": job.method,
            "args": [],
            "kwargs": {},
            "options": {
                "queue": job.queue,
                "headers": {"site": site, "event": job.event, "method": job.method},
            },
            "schedule": schedule,
            "enabled": True,
        },
        sort_keys=True,
    )


def read_entries(r: Any, keys: Keys) -> tuple[list[str], dict[str, tuple[Any, Any]]]:
    """Every entry key in RedBeat's zset and its stored (definition, meta)."""
    existing = [k.decode() for k in r.zrange(keys.redbeat_schedule, 0, -1)]
    stored: dict[str, tuple[Any, Any]] = {}
    for chunk in chunks(existing, BATCH):
        pipe = r.pipeline(transaction=False)
        for key in chunk:
            pipe.hmget(key, "definition", "meta")
        for key, values in zip(chunk, pipe.execute(), strict=True):
            stored[key] = (values[0], values[1])
    return existing, stored


def write_entries(r: Any, keys: Keys, plan: Plan, problems_changed: bool) -> ReconcileStats:
    """Write what differs between ``plan`` and Redis; problems are logged and stored only if changed."""
    stats = ReconcileStats()
    existing, stored = read_entries(r, keys)
    pipe = _write_changed(r, keys, plan, stored, stats)
    gone = [] if plan.hooks_failed else [k for k in existing if k not in plan.entries]
    # When an app's hooks failed to import (say, mid-deploy) its entries are kept with their phase.
    for chunk in chunks(gone, BATCH):
        pipe.zrem(keys.redbeat_schedule, *chunk)
        pipe.delete(*chunk)
    stats.removed = len(gone)
    if problems_changed:
        for problem in plan.problems:
            logger.error("Scheduled job not scheduled: %s", problem)
        pipe.set(keys.scheduler_problems, json.dumps(plan.problems))
    if len(pipe):
        pipe.execute()
    stats.entries = len(plan.entries)
    stats.problems = plan.problems
    return stats


def _write_changed(r: Any, keys: Keys, plan: Plan, stored: dict[str, tuple[Any, Any]], stats: ReconcileStats) -> Any:
    """Queue the writes of new and changed entries; returns the pipeline still to execute."""
    now = datetime.now(UTC)
    now_meta = encode_meta(now, 0)
    tz = zone(plan.tz_name)
    pipe = r.pipeline(transaction=False)
    for key, definition in plan.definitions.items():
        old = stored.get(key)
        if old is not None and old[0] is not None and old[0].decode() == definition:
            continue
        _site, job = plan.entries[key]
        last = decode_meta(old[1])[0] if old is not None else None
        if old is None:
            stats.added += 1
        else:
            stats.changed += 1
        pipe.hset(key, "definition", definition)
        pipe.hsetnx(key, "meta", now_meta)
        pipe.zadd(keys.redbeat_schedule, {key: int(next_run(job, last or now, plan.interval, tz).timestamp())})
        if len(pipe) >= 3 * BATCH:
            pipe.execute()
            pipe = r.pipeline(transaction=False)
    return pipe


def config_fingerprint(bench: Bench, common: dict[str, Any]) -> Any:
    """What the entries depend on besides the site list: apps.txt, hooks files, schedule settings."""
    files = []
    for path in hooks_files(bench.apps()):
        try:
            st = os.stat(path)
            files.append((path, st.st_mtime_ns, st.st_size))
        except OSError:
            files.append((path, 0, 0))
    return (
        _stat(bench.sites_path / "apps.txt"),
        tuple(files),
        common.get("scheduler_interval"),
        common.get("time_zone"),
        json.dumps(common.get("allowed_methods"), sort_keys=True),
    )


def chunks(items: list[str], size: int) -> Iterable[list[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _stat(path: Any) -> tuple[int, int]:
    try:
        st = os.stat(path)
    except OSError:
        return (0, 0)
    return (st.st_mtime_ns, st.st_size)
