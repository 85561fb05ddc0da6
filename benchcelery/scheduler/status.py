"""``scheduler status``: a site's scheduler state, activity and scheduled jobs (data only).

- state: enabled / disabled / paused (``state.py``), with the reasons it is inactive;
- last executed: when ``bench schedule`` last enqueued a job of the site;
- pending events: the site's scheduled runs queued and not yet taken by a worker (messages whose
  id starts ``<site>::scheduled_job::``, counted inside Redis);
- failed jobs: every failed job of the site (the number ``show-pending-jobs`` and ``doctor``
  show), and of them the failed scheduled runs (``failed_scheduled_jobs``);
- per job (verbose / JSON): event, method, queue, last run and outcome: ``queued`` or ``running``
  while its current run is (last run = when that run was enqueued), else how the last run ended,
  ``ok`` or ``failed`` (run log); next run (RedBeat's score), none while the site is inactive.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from benchcelery.jobs import registry
from benchcelery.runtime import Runtime
from benchcelery.scheduler import JOB_ID_PREFIX
from benchcelery.scheduler.events import load_jobs
from benchcelery.scheduler.runlog import last_runs
from benchcelery.scheduler.state import site_state


@dataclass
class JobStatus:
    event: str
    method: str
    queue: str
    cron: str | None
    last_run: float | None = None  # when its current run was enqueued, else when its last run ended (epoch s)
    last_outcome: str | None = None  # queued / running / ok / failed
    last_error: str | None = None
    next_run: float | None = None  # epoch s, from the running scheduler's schedule


@dataclass
class SchedulerProcess:
    running: bool
    last_tick: float | None = None
    pid: int | None = None
    host: str | None = None


@dataclass
class SchedulerStatus:
    site: str
    status: str  # enabled / disabled / paused
    active: bool
    reasons: list[str]
    last_executed: float | None
    pending_events: int
    failed_jobs: int  # every failed job of the site
    scheduler: SchedulerProcess
    failed_scheduled_jobs: int = 0  # of them, scheduled runs
    time_zone: str = "UTC"
    jobs: list[JobStatus] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["last_executed"] = format_time(self.last_executed, self.time_zone)
        for job in data["jobs"]:
            job["last_run"] = format_time(job["last_run"], self.time_zone)
            job["next_run"] = format_time(job["next_run"], self.time_zone)
        data["scheduler"]["last_tick"] = format_time(self.scheduler.last_tick, self.time_zone)
        return data


def format_time(ts: float | None, tz_name: str = "UTC") -> str | None:
    """``YYYY-MM-DD HH:MM:SS`` in the bench time zone (the guide's format), or None."""
    if ts is None:
        return None
    from benchcelery.scheduler.schedules import zone

    try:
        tz: Any = zone(tz_name)
    except ValueError:
        tz = UTC
    return datetime.fromtimestamp(ts, tz).strftime("%Y-%m-%d %H:%M:%S")


def scheduler_process(rt: Runtime) -> SchedulerProcess:
    """Whether a ``bench schedule`` is active (its heartbeat key expires by itself)."""
    raw = rt.redis.get(rt.keys.scheduler_heartbeat)
    if not raw:
        return SchedulerProcess(running=False)
    beat = json.loads(raw)
    return SchedulerProcess(running=True, last_tick=beat.get("last_tick"), pid=beat.get("pid"), host=beat.get("host"))


def scheduler_status(rt: Runtime, site: str, jobs: bool = True) -> SchedulerStatus:
    """The site's scheduler status; ``jobs`` adds one JobStatus per scheduled job (reads hooks)."""
    r, keys = rt.redis, rt.keys
    state = site_state(rt.bench, site)
    queues = list(rt.settings.queues)
    # Scheduled runs are enqueued with deterministic ids whose status key says "queued" until a
    # worker starts them: counting them is one MGET, whatever the size of the backlog.
    found, problems = load_jobs(rt.apps(), rt.allowed_methods(), check_methods=jobs)
    ids = sorted({job.job_id for job in found})
    states = r.mget([keys.job_status(f"{site}::{job_id}") for job_id in ids]) if ids else []
    pending = sum(1 for value in states if value == registry.QUEUED.encode())
    current = dict(zip(ids, (v.decode() if v else None for v in states), strict=True))
    failed_prefix = f"{site}::{JOB_ID_PREFIX}"
    failed_ids = [job_id for queue in queues for job_id in registry.failed_ids(r, keys, queue, site)]
    last = r.hget(keys.scheduler_lastrun, site)
    status = SchedulerStatus(
        site=site,
        status=state.state,
        active=state.active,
        reasons=list(state.reasons),
        last_executed=float(last) if last else None,
        pending_events=pending,
        failed_jobs=len(failed_ids),
        failed_scheduled_jobs=sum(1 for job_id in failed_ids if job_id.startswith(failed_prefix)),
        scheduler=scheduler_process(rt),
        time_zone=str(rt.settings.get("time_zone") or "UTC"),
    )
    raw_problems = r.get(keys.scheduler_problems)
    if jobs:
        status.problems = [str(p) for p in problems]
        runs = last_runs(r, keys, site)
        enqueued = {k.decode(): float(v) for k, v in r.hgetall(keys.scheduler_enqueued(site)).items()}
        pipe = r.pipeline(transaction=False)
        for job in found:
            pipe.zscore(keys.redbeat_schedule, keys.redbeat_entry(job.entry_name(site)))
        scores = pipe.execute() if found else []
        for job, score in zip(found, scores, strict=True):
            name = f"{job.event}::{job.method}"
            item = _job_status(job, runs.get(name), current.get(job.job_id), enqueued.get(name))
            item.next_run = float(score) if score is not None and score >= 0 and state.active else None
            status.jobs.append(item)
    elif raw_problems:
        status.problems = list(json.loads(raw_problems))
    return status


def _job_status(job: Any, run: Any, current: str | None, enqueued_at: float | None) -> JobStatus:
    """A scheduled job's row: its current run (queued / running) if it has one, else its last run."""
    item = JobStatus(event=job.event, method=job.method, queue=job.queue, cron=job.cron)
    if current in (registry.QUEUED, registry.STARTED):
        item.last_outcome = "queued" if current == registry.QUEUED else "running"
        item.last_run = enqueued_at or (run.ended_at if run else None)
    elif run is not None:
        item.last_run, item.last_outcome, item.last_error = run.ended_at, run.outcome, run.error
    return item


def ago(ts: float | None) -> str:
    if ts is None:
        return "never"
    seconds = max(0, int(time.time() - ts))
    return f"{seconds} s ago" if seconds < 120 else f"{seconds // 60} min ago"
