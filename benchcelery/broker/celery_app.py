"""The Celery app of a bench, built from its settings.

Every bench gets its own key prefix (kombu ``global_keyprefix``, RedBeat prefix, our keys), so
several benches can share one Redis without seeing each other's queues, in-flight messages,
control broadcasts, schedules or registries.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from kombu import Connection, Exchange, Queue

from benchcelery.bench.config import DEFAULTS, Settings
from benchcelery.bench.keys import EXECUTE_JOB, NORMAL_PRIORITY
from benchcelery.store import durable as ha
from benchcelery.store import sentinel
from benchcelery.store.connection import broker_url

OUR_TRANSPORT = "benchcelery.broker.transport:Transport"
OUR_SENTINEL_TRANSPORT = "benchcelery.broker.sentinel_transport:SentinelTransport"  # sentinel:// (sentinel.py)
WORKER_LOST_RETRIES = 2  # a job whose pool process died is run again at most this often


def transport_options(settings: Settings, strategy: str | None = None) -> dict[str, Any]:
    options: dict[str, Any] = {
        "global_keyprefix": settings.keys.kombu_prefix,
        # Leases replace kombu's visibility timeout (delivery.py): a live worker's job is never
        # handed to another worker, a dead worker's job is back in its queue within ~lease + 5 s.
        "job_lease": settings.number("job_lease"),
        # A message whose worker died (or failed on it) this often is failed at its next fetch.
        "max_redeliveries": settings.number("max_redeliveries"),
        "socket_connect_timeout": 5,
        "socket_keepalive": True,
        "health_check_interval": 25,
    }
    if strategy == "random":
        options["queue_order_strategy"] = "benchcelery.worker.strategy:random_cycle"
    elif strategy:
        options["queue_order_strategy"] = strategy
    return options


def register_transport() -> None:
    """Serve redis:// and rediss:// URLs with our transport (transport.py), so the broker URL users,
    Flower and ``celery -A benchcelery.app`` see is a plain ``redis://`` one (Flower's Broker page
    and ``/api/queues/length`` only know the stock scheme names)."""
    from kombu import transport

    for scheme, ours in (("redis", OUR_TRANSPORT), ("rediss", OUR_TRANSPORT), ("sentinel", OUR_SENTINEL_TRANSPORT)):
        if transport.TRANSPORT_ALIASES.get(scheme) != ours:
            transport.TRANSPORT_ALIASES[scheme] = ours
            transport._transport_cache.pop(scheme, None)


class MaskedConnection(Connection):
    """kombu's connection whose URL for the worker banner and logs masks a password only when there
    is one (kombu writes ``redis://:**@host`` for none)."""

    def as_uri(self, include_password: Any = False, mask: Any = "**", *args: Any) -> str:
        uri = str(super().as_uri(include_password, mask, *args))
        if not include_password and not self.password:
            uri = uri.replace(f":{mask}@", "@", 1).replace("://@", "://", 1)
        return uri


def make_app(settings: Settings, strategy: str | None = None, task_modules: tuple[str, ...] = ()) -> Celery:
    """A configured Celery app for the bench. ``task_modules`` are loaded by a worker at start (Celery's
    ``imports``) and by any process when the app is finalized: the caller names the modules that
    register ``execute_job`` and give the transport its hooks, so this layer imports none of them."""
    app = Celery(f"bench-{settings.bench_id}", set_as_current=False)
    app.amqp.Connection = MaskedConnection  # the banner's and logs' URL (as_uri)
    url = broker_url(settings)
    register_transport()  # our kombu transport subclass behind redis:// (see transport.py)
    app.conf.update(
        broker_url=url,
        broker_transport_options={**transport_options(settings, strategy), **ha.transport_options(settings)},
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
        timezone=str(settings.get("time_zone") or DEFAULTS["time_zone"]),
        # RedBeat (scheduler) lives under the bench prefix too.
        redbeat_redis_url=sentinel.redbeat_url(settings) if sentinel.is_sentinel_url(url) else url,
        redbeat_key_prefix=settings.keys.redbeat_prefix,
    )
    app.benchcelery_settings = settings  # type: ignore[attr-defined]
    app.conf.imports = task_modules
    app.on_after_finalize.connect(_load_imports, weak=False)
    app.on_after_finalize.connect(_only_the_job_task, weak=False)
    return app


def _load_imports(sender: Celery, **_: Any) -> None:
    sender.loader.import_default_modules()


def _only_the_job_task(sender: Celery, **_: Any) -> None:
    """Security: a worker runs nothing but ``execute_job`` (site context, allowlist, failure record).
    Celery's built-in tasks (``celery.accumulate``, ``celery.chord_unlock``, ...) leave the registry,
    so a forged message naming one is an unknown task, refused and recorded by our Consumer."""
    for name in [n for n in sender.tasks if n != EXECUTE_JOB]:
        del sender.tasks[name]


def settings_of(app: Celery) -> Settings:
    return app.benchcelery_settings  # type: ignore[attr-defined,no-any-return]
