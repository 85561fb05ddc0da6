"""The worker's main process side of a retry: after the pool process decided on another attempt
(jobs/retry.py raised RetryScheduled), the job's ack becomes ``ack_retry`` (broker/delayed.py),
which takes the job out of flight and schedules its next attempt in one step."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from celery.exceptions import Retry as CeleryRetry

from benchcelery.bench.keys import NORMAL_PRIORITY, UNKNOWN_SITE
from benchcelery.broker.delayed import RETRY, Entry
from benchcelery.jobs import registry
from benchcelery.jobs.bulk import uuid4_text
from benchcelery.jobs.retry import next_message
from benchcelery.runtime import get_runtime

logger = logging.getLogger("benchcelery.job")


class RetryScheduled(CeleryRetry):
    """Raised by the pool process for a failed attempt that will be retried: Celery counts it as a
    retry ("task-retried", Flower's RETRY), the worker's main process schedules the attempt
    (jobs/request.py) with the job's ack."""

    def __init__(self, delay: float, attempt: dict[str, Any]) -> None:
        super().__init__(message=f"next attempt in {delay:.1f} s ({attempt.get('exception')})", when=delay)
        self.delay = delay
        self.attempt = attempt

    def __reduce__(self) -> Any:
        return (RetryScheduled, (self.delay, self.attempt))


def retry_entry(raw: dict[str, Any], attempt: dict[str, Any]) -> Entry:
    """The delayed entry of the next attempt of the job whose kombu payload is ``raw``."""
    keys = get_runtime().keys
    headers = raw.get("headers") or {}
    properties = raw.get("properties") or {}
    queue = (properties.get("delivery_info") or {}).get("routing_key") or "default"
    priority = properties.get("priority")
    tag = uuid4_text()
    job_id = str(headers.get("id") or "")
    site = str(headers.get("site") or UNKNOWN_SITE)
    return Entry(
        id=tag,
        list=keys.site_list(queue, site, priority if isinstance(priority, int) else NORMAL_PRIORITY),
        queue=queue,
        site=site,
        job_id=job_id,
        kind=RETRY,
        message=next_message(raw, attempt, tag),
        status_key=keys.job_status(job_id) if headers.get("tracked") else "",
    )


def schedule_retry(request: Any, exc: RetryScheduled, record_failure: Callable[[BaseException], None]) -> None:
    """Make the ack of ``request`` (a JobRequest that failed with attempts left) schedule its next
    attempt; when that cannot be done here, ``record_failure`` records the failure instead."""
    message = getattr(request, "message", None)
    channel = getattr(message, "channel", None)
    schedule = getattr(channel, "schedule_on_ack", None)
    try:
        if schedule is None:
            raise RuntimeError("this worker's transport cannot schedule retries")
        entry = retry_entry(message._raw, exc.attempt)  # type: ignore[union-attr]
        ttl = int(exc.delay) + get_runtime().settings.number("rq_job_failure_ttl")
        schedule(message.delivery_tag, entry, exc.delay, registry.RETRYING, ttl)  # type: ignore[union-attr]
        logger.info("Job %s failed (%s): next attempt in %.1f s", request.id, exc.attempt.get("exception"), exc.delay)
    except Exception as error:
        logger.exception("Could not schedule the next attempt of job %s", request.id)
        record_failure(error)
