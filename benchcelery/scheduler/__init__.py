"""The scheduler: apps' ``scheduler_events`` run per site through the normal workers.

Modules: ``events`` (hooks -> scheduled jobs, due-time rules), ``state`` (per-site on/off/pause
from site_config.json), ``schedules`` (RedBeat entry format), ``reconcile`` (entries from hooks x
sites), ``timing`` (loop interval, lock timeout), ``sweeper`` (recovers leases of dead workers),
``beat`` (``bench schedule``: the RedBeat scheduler subclass, tick and fire), ``trigger``
(``trigger-scheduler-event``), ``status`` (``scheduler status``), ``runlog`` (the run log written
by workers).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from benchcelery.context import local

JOB_ID_PREFIX = "scheduled_job::"  # job ids of scheduled runs: <site>::scheduled_job::<method>


@contextlib.contextmanager
def as_site(site: str, user: str = "Administrator") -> Iterator[None]:
    """Run the body in ``site``'s context (for ``enqueue``), restoring the caller's afterwards."""
    saved = (local.site, local.user, local.conf, local.job)
    local.site, local.user = site, user
    try:
        yield
    finally:
        local.site, local.user, local.conf, local.job = saved
