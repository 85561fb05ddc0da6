"""``trigger-scheduler-event``: enqueue scheduled jobs now, through the workers.

EVENT is an event type (the guide's form: ``daily``, ``hourly_long``, ``cron``...; ``all`` means
every scheduled job) or a scheduled job's method path (Frappe's form). Runs use the same id as
the scheduler's (``scheduled_job::<method>``), so a job whose previous run is still queued or
running is reported as skipped, not queued twice. The site's scheduler state does not matter: a
manual trigger is how one runs jobs while the scheduler is disabled.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from benchcelery.errors import BenchError, RedisUnavailableError, ValidationError
from benchcelery.runtime import Runtime
from benchcelery.scheduler import as_site
from benchcelery.scheduler.events import ALL, EVENT_TYPES, ScheduledJob, load_jobs

ENQUEUED, SKIPPED, FAILED = "enqueued", "skipped", "failed"


@dataclass
class Triggered:
    site: str
    event: str
    method: str
    queue: str
    status: str  # enqueued / skipped (previous run still queued or running) / failed
    job_id: str | None = None
    error: str | None = None


@dataclass
class TriggerResult:
    event: str
    sites: list[str]
    runs: list[Triggered] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(run.status != FAILED for run in self.runs)

    def as_dict(self) -> dict[str, Any]:
        return {"event": self.event, "sites": self.sites, "runs": [asdict(r) for r in self.runs]}


def select_jobs(jobs: list[ScheduledJob], event: str) -> list[ScheduledJob]:
    """The jobs EVENT names; raises ValidationError when it is neither an event type nor a job's method."""
    if event == ALL:
        return list(jobs)
    if event in EVENT_TYPES:
        return [job for job in jobs if job.event == event]
    matching = [job for job in jobs if job.method == event]
    if not matching:
        raise ValidationError(f"Event {event[:200]} does not exist!")
    return matching[:1]  # one run: every entry of a method shares its run id


def trigger(rt: Runtime, sites: list[str], event: str) -> TriggerResult:
    """Enqueue EVENT's scheduled jobs for each site now. Raises ValidationError for an unknown EVENT
    and RedisUnavailableError (rather than recording failed runs) when Redis cannot be reached."""
    from benchcelery.jobs.enqueue import enqueue

    event = event.strip()
    jobs, _problems = load_jobs(rt.apps(), rt.allowed_methods())
    selected = select_jobs(jobs, event)
    result = TriggerResult(event=event, sites=sites)
    now = time.time()
    for site in sites:
        for job in selected:
            run = Triggered(site=site, event=job.event, method=job.method, queue=job.queue, status=ENQUEUED)
            try:
                with as_site(site):
                    enqueued = enqueue(
                        job.method, queue=job.queue, event=job.event, job_id=job.job_id, deduplicate=True
                    )
            except RedisUnavailableError:
                raise  # not one job's failure: every command reports an unreachable Redis alike (exit 69)
            except BenchError as exc:
                run.status, run.error = FAILED, str(exc)
            else:
                if enqueued is None:
                    run.status = SKIPPED
                else:
                    run.job_id = enqueued.id  # type: ignore[union-attr]
            result.runs.append(run)
        started = {f"{run.event}::{run.method}": now for run in result.runs if run.site == site and run.job_id}
        if started:  # scheduler status: the run's "last run" while it is queued or running
            rt.redis.hset(rt.keys.scheduler_enqueued(site), mapping=started)  # type: ignore[arg-type]
    return result
