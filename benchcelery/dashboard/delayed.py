"""What the dashboard shows of the job lifecycle: the delayed jobs (scheduled to run later, retrying
after a failure) with their due times and attempts, and each queue's pause state and delayed counts.

Counts come from the counters the delayed-set scripts keep (diagnostics/figures.py
``delayed_counts``); the listing reads the earliest-due entries of the delayed set, at most
LIST_CAP of them, so a bench with 100,000 delayed jobs still answers at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from benchcelery.diagnostics.figures import delayed_counts
from benchcelery.errors import ValidationError
from benchcelery.jobs import registry
from benchcelery.jobs.scheduled import DelayedJob, delayed_jobs
from benchcelery.runtime import Runtime

PER_PAGE = 50
LIST_CAP = 5000  # delayed entries read for one page (earliest due first)
STATES = ("", registry.SCHEDULED, registry.RETRYING)  # "" = both


@dataclass
class QueueStates:
    """Per queue: paused or not, jobs scheduled to run later, jobs waiting for a retry."""

    queues: list[str]
    paused: set[str] = field(default_factory=set)
    scheduled: dict[str, int] = field(default_factory=dict)
    retrying: dict[str, int] = field(default_factory=dict)

    @property
    def total_scheduled(self) -> int:
        return sum(self.scheduled.values())

    @property
    def total_retrying(self) -> int:
        return sum(self.retrying.values())


def queue_states(rt: Runtime) -> QueueStates:
    """The bench's queues with their pause state and delayed counts (one round trip)."""
    queues = list(rt.settings.queues)
    scheduled, retrying, paused = delayed_counts(rt.redis, rt.keys, queues)
    return QueueStates(
        queues=queues,
        paused={q for q in paused if q in queues},
        scheduled={q: sum(scheduled.get(q, {}).values()) for q in queues},
        retrying={q: sum(retrying.get(q, {}).values()) for q in queues},
    )


@dataclass
class DelayedPage:
    state: str  # "", "scheduled" or "retrying"
    site: str  # "" = every site
    queue: str  # "" = every queue
    jobs: list[DelayedJob]
    total: int  # matching rows among the LIST_CAP earliest due
    capped: bool  # more delayed jobs exist than were read
    page: int
    pages: int


def delayed_page(rt: Runtime, state: str, site: str, queue: str, page: int) -> DelayedPage:
    """One page of delayed jobs (earliest due first), filtered by state, site and queue."""
    if state not in STATES:
        raise ValidationError("state must be scheduled or retrying")
    if site:
        rt.bench.require_site(site)
    if queue:
        rt.settings.validate_queue(queue)
    rows = delayed_jobs(rt, state or None, limit=LIST_CAP)
    capped = len(rows) >= LIST_CAP
    rows = [r for r in rows if (not site or r.site == site) and (not queue or r.queue == queue)]
    pages = max(1, -(-len(rows) // PER_PAGE))
    start = (min(page, pages) - 1) * PER_PAGE
    return DelayedPage(state, site, queue, rows[start : start + PER_PAGE], len(rows), capped, min(page, pages), pages)
