"""The Celery app of a bench, built from its settings.

Every bench gets its own key prefix (kombu ``global_keyprefix``, RedBeat prefix, our keys), so
several benches can share one Redis without seeing each other's queues, in-flight messages,
control broadcasts, schedules or registries.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from kombu import Exchange, Queue

from benchcelery.config import Settings
from benchcelery.connection import broker_url
from benchcelery.jobs.bulk import EXECUTE_JOB
from benchcelery.keys import NORMAL_PRIORITY

WORKER_LOST_RETRIES = 2  # a job whose pool process died is run again at most this often


def transport_options(settings: Settings, strategy: str | None = None) -> dict[str, Any]:
    options: dict[str, Any] = {
        "global_keyprefix": settings.keys.kombu_prefix,
        # Leases replace kombu's visibility timeout (delivery.py): a live worker's job is never
        # handed to another worker, a dead worker's job is back in its queue within ~lease + 5 s.
        "job_lease": settings.number("job_lease"),
        "socket_connect_timeout": 5,
        "socket_keepalive": True,
        "health_check_interval": 25,
    }
    if strategy == "random":
        options["queue_order_strategy"] = "benchcelery.worker.strategy:random_cycle"
    elif strategy:
        options["queue_order_strategy"] = strategy
    return options


def make_app(settings: Settings, strategy: str | None = None) -> Celery:
    """A configured Celery app for the bench, with the ``execute_job`` task registered."""
    app = Celery(f"bench-{settings.bench_id}", set_as_current=False)
    url = broker_url(settings)
    scheme = url.split("://", 1)[0]
    app.conf.update(
        broker_url=url,
        # Our kombu transport subclass reuses one redis client (see transport.py).
        broker_transport="benchcelery.transport:Transport" if scheme in ("redis", "rediss") else None,
        broker_transport_options=transport_options(settings, strategy),
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,  # keep trying: supervisors restart workers anyway
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        result_backend=None,
        task_ignore_result=True,
        task_store_errors_even_if_ignored=False,
        task_queues=[Queue(q, Exchange(q, type="direct"), routing_key=q) for q in settings.queues],
        task_default_queue="default",
        task_default_exchange="default",
        task_default_routing_key="default",
        task_create_missing_queues=False,
        task_default_priority=NORMAL_PRIORITY,
        # A job whose worker dies is handed to another worker (nothing lost); a job whose pool
        # process dies is retried a bounded number of times, then recorded as failed.
        task_acks_late=True,
        task_reject_on_worker_lost=False,
        task_retry_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_cancel_long_running_tasks_on_connection_loss=False,
        worker_hijack_root_logger=True,
        worker_redirect_stdouts=False,
        enable_utc=True,
        timezone=str(settings.get("time_zone") or "UTC"),
        # RedBeat (scheduler) lives under the bench prefix too.
        redbeat_redis_url=url,
        redbeat_key_prefix=settings.keys.redbeat_prefix,
    )
    app.benchcelery_settings = settings  # type: ignore[attr-defined]

    from benchcelery.jobs.execute import JobRequest, JobTask, execute_job

    app.task(
        name=EXECUTE_JOB,
        bind=True,
        base=JobTask,
        Request=JobRequest,
        max_retries=WORKER_LOST_RETRIES,
        default_retry_delay=0,
        acks_late=True,
    )(execute_job)
    return app


def settings_of(app: Celery) -> Settings:
    return app.benchcelery_settings  # type: ignore[attr-defined,no-any-return]
