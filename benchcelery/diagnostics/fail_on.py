"""What else makes ``bench doctor`` exit 1: ``--fail-on`` (or config ``doctor_fail_on``).

By default only problems count (a queue nobody serves, no scheduler, a stuck job, an unreachable
database); failed jobs and workers whose heartbeat lapsed are shown but do not. A cron health check
can make them count::

    bench doctor --fail-on failed,dead-workers     # any failed job, any dead worker
    bench doctor --fail-on failed=10               # 10 failed jobs or more on a site

Items: ``failed[=N]`` (N failed records on a site, default 1), ``dead-workers[=N]`` (N workers gone,
default 1), ``warnings`` (the Redis warnings: eviction policy, no persistence).
"""

from __future__ import annotations

from typing import Any

from benchcelery.diagnostics.doctor import DoctorReport
from benchcelery.errors import ValidationError

ITEMS = ("failed", "dead-workers", "warnings")


def parse_fail_on(value: Any) -> dict[str, int]:
    """``"failed=10,dead-workers"`` (or a JSON list of such items) -> ``{"failed": 10, "dead-workers": 1}``;
    ValidationError on an unknown item or a threshold that is not a positive number."""
    if not value:
        return {}
    parts = value if isinstance(value, list) else str(value).split(",")
    thresholds: dict[str, int] = {}
    for part in (str(p).strip() for p in parts):
        if not part:
            continue
        name, _, number = part.partition("=")
        if name not in ITEMS:
            raise ValidationError(f"unknown item {name!r}; use {', '.join(ITEMS)} (failed and dead-workers take =N)")
        try:
            threshold = int(number) if number else 1
        except ValueError:
            threshold = 0
        if threshold < 1 or (number and name == "warnings"):
            raise ValidationError(f"{part!r}: the threshold must be a positive number (failed=N, dead-workers=N)")
        thresholds[name] = threshold
    return thresholds


def fail_on_problems(report: DoctorReport, thresholds: dict[str, int]) -> list[str]:
    """The problems ``thresholds`` add to ``report`` (one line each, as doctor's own)."""
    problems: list[str] = []
    if "failed" in thresholds:
        for site in report.sites:
            if site.failed >= thresholds["failed"]:
                problems.append(
                    f"{site.site}: {site.failed} failed job{'s' if site.failed != 1 else ''} "
                    f"(bench --site {site.site} jobs list --state failed)"
                )
    if "dead-workers" in thresholds:
        gone = [w.name for w in report.workers if not w.alive]
        if len(gone) >= thresholds["dead-workers"]:
            problems.append(f"{len(gone)} worker{'s' if len(gone) != 1 else ''} gone: {', '.join(gone)}")
    if "warnings" in thresholds:
        problems += [f"Redis: {w}" for w in report.redis.warnings]
    return problems
