"""Typed settings of a bench, with every default in one place.

Precedence: command-line flag > environment variable > site_config.json > common_site_config.json
> the defaults below. ``Settings.from_bench`` validates once; commands build it lazily.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from typing import Any

from benchcelery.bench.keys import Keys
from benchcelery.bench.layout import Bench
from benchcelery.bench.names import queue_name_problem
from benchcelery.bench.redis_url import db_number, frappe_url, mask_url, next_db_url, redis_url_problem, same_server
from benchcelery.errors import ValidationError

DEFAULT_REDIS_QUEUE = "redis://127.0.0.1:11000"
REDIS_QUEUE_ENVS = ("BENCH_REDIS_QUEUE", "FRAPPE_REDIS_QUEUE")

# Queue types in their default worker order (short is served first), with default timeouts (s).
BUILTIN_QUEUES: dict[str, int] = {"short": 300, "default": 1800, "long": 7200}
CUSTOM_QUEUE_TIMEOUT = 300
# A job gets SoftTimeLimitExceeded at its timeout and is killed this many seconds later.
HARD_LIMIT_GRACE = 5

DEFAULTS: dict[str, Any] = {
    "rq_failed_jobs_limit": 1000,  # failed records kept per queue
    "rq_job_failure_ttl": 7 * 24 * 3600,  # how long failed records are kept (s)
    "rq_results_ttl": 600,  # how long a finished tracked job answers "finished" (s)
    "background_workers": 1,
    "background_process_niceness": 10,  # os.nice() increment of worker pool processes (Frappe's default)
    "scheduler_interval": 240,  # period of "all" scheduled events (s)
    "scheduler_tick_interval": 60,  # the scheduler wakes at least this often (s)
    "time_zone": "UTC",
    "max_redeliveries": 3,  # a job whose worker died this often is failed, not run again
    "job_lease": 30,  # s; a taken job's lease, renewed every lease/3 s while its worker lives
    "enqueue_failover_wait": 15,  # s; with Sentinel, how long an enqueue waits for a promoted master
    "socketio_port": 9000,
    "doctor_fail_on": "",  # what else makes `bench doctor` exit 1, e.g. "failed,dead-workers"
    "dashboard_port": 9030,  # `bench dashboard`
    "dashboard_token_max_age": 30 * 24 * 3600,  # how long a dashboard login token is valid (s)
    "realtime_token_max_age": 7 * 24 * 3600,  # how long a realtime (socket.io) token is valid (s)
    # Durable enqueue: each push waits for this many replicas, at most this long (s); 0 = no wait.
    "enqueue_wait_replicas": 0,
    "enqueue_wait_timeout": 1.0,
    "dashboard_trusted_proxies": [],  # addresses whose X-Forwarded-Proto the dashboard believes
    "durations_ttl": 7 * 24 * 3600,  # s; a method's duration series not written for this long is dropped
    # Job history (dashboard charts, `bench jobs top`): counters per minute kept this long (s), per
    # hour that long; False writes none.
    "history_enabled": True,
    "history_minutes_ttl": 24 * 3600,
    "history_hours_ttl": 30 * 24 * 3600,
    # Monitoring: `bench worker --events` by default; `bench metrics` and `bench flower` addresses.
    "worker_send_task_events": False,
    "metrics_port": 9808,
    "metrics_address": "127.0.0.1",
    "metrics_allow_public": False,  # serve /metrics off loopback without metrics_basic_auth
    "flower_port": 5555,
    "flower_address": "127.0.0.1",
    "dashboard_host": "127.0.0.1",
    "dashboard_read_only": False,
    "socketio_host": "127.0.0.1",
    "realtime_cors_allowed_origins": "*",
    "enable_scheduler": True,  # missing means enabled (scheduler/state.py says why)
    "db_type": "mariadb",  # `bench doctor`'s database check (Frappe's keys)
    "db_host": "127.0.0.1",
}


@dataclass(frozen=True)
class QueueSpec:
    name: str
    timeout: int  # seconds; the job gets SoftTimeLimitExceeded after this

    @property
    def hard_limit(self) -> int:
        return self.timeout + HARD_LIMIT_GRACE


# `bench create-rq-users --set-admin-password` prints the first (Frappe's spelling, which Frappe
# reads); the correctly spelled one is read too.
ADMIN_PASSWORD_ENVS = ("RQ_ADMIN_PASWORD", "RQ_ADMIN_PASSWORD")


def admin_password() -> str | None:
    """The Redis admin password from the environment (RQ_ADMIN_PASWORD, then RQ_ADMIN_PASSWORD)."""
    return next((os.environ[e] for e in ADMIN_PASSWORD_ENVS if os.environ.get(e)), None)


@dataclass(frozen=True)
class Settings:
    bench: Bench
    redis_url: str
    bench_id: str
    queues: dict[str, QueueSpec]
    conf: dict[str, Any] = field(repr=False)
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @classmethod
    def from_bench(
        cls,
        bench: Bench,
        username: str | None = None,
        password: str | None = None,
        redis_url: str | None = None,
    ) -> Settings:
        conf = {**DEFAULTS, **bench.common_config()}
        url = redis_url or next((os.environ[e] for e in REDIS_QUEUE_ENVS if os.environ.get(e)), None)
        url = url or frappe_url(conf) or conf.get("redis_queue") or DEFAULT_REDIS_QUEUE
        problem = redis_url_problem(url)
        if problem:
            raise ValidationError(f"redis_queue {mask_url(url)[:200]} {problem}")
        if conf.get("use_rq_auth") or username or password:
            username = username or conf.get("rq_username") or bench.bench_id
            password = password or conf.get("rq_password")
        elif admin_password():
            # As Frappe's get_redis_conn: without use_rq_auth, the admin password from the
            # environment authenticates as the default user.
            username, password = "default", admin_password()
        bench_id = str(conf.get("bench_id") or bench.bench_id)  # checked: schema.bench_id
        return cls(
            bench=bench,
            redis_url=url,
            bench_id=bench_id,
            queues=queue_specs(conf),
            conf=conf,
            username=username or None,
            password=password or None,
        )

    @functools.cached_property
    def keys(self) -> Keys:
        return Keys(self.bench_id)  # once: workers and enqueue name keys for every job

    def get(self, key: str, default: Any = None) -> Any:
        return self.conf.get(key, default)

    def number(self, key: str) -> int:
        try:
            return int(self.conf.get(key, DEFAULTS.get(key, 0)))
        except (TypeError, ValueError):
            raise ValidationError(f"Config key {key} must be a number") from None

    def validate_queue(self, queue: str) -> QueueSpec:
        try:
            return self.queues[queue]
        except KeyError:
            raise ValidationError(f"Queue should be one of {', '.join(self.queues)}") from None

    def parse_queues(self, value: str | None) -> list[str]:
        """A comma-separated ``--queue`` value -> validated queue names (all queues when empty)."""
        if not value:
            return list(self.queues)
        names = [q.strip() for q in value.split(",") if q.strip()]
        for name in names:
            self.validate_queue(name)
        return list(dict.fromkeys(names))

    @property
    def display_url(self) -> str:
        return mask_url(self.redis_url)


def queue_specs(conf: dict[str, Any]) -> dict[str, QueueSpec]:
    """short, default, long (timeouts overridable by ``workers.<q>.timeout``) then custom queues."""
    workers = conf.get("workers") or {}
    if not isinstance(workers, dict):
        raise ValidationError("Config key workers must be an object {queue: {timeout, background_workers}}")
    specs: dict[str, QueueSpec] = {}
    for name in [*BUILTIN_QUEUES, *(w for w in workers if w not in BUILTIN_QUEUES)]:
        opts = workers.get(name) or {}
        timeout = opts.get("timeout") or BUILTIN_QUEUES.get(name, CUSTOM_QUEUE_TIMEOUT)
        if queue_name_problem(name):
            raise ValidationError(f"Invalid queue name {name!r} in workers config")
        try:
            specs[name] = QueueSpec(name, int(timeout))
        except (TypeError, ValueError):
            raise ValidationError(f"workers.{name}.timeout must be a number of seconds") from None
    return specs


def cache_url(settings: Settings) -> str:
    """The cache Redis (``frappe.cache()``): config ``redis_cache`` when the user set it, else derived
    from ``redis_queue`` (its server's next database number), so it follows the queue when that
    moves. Never the queue's own database."""
    url = str(settings.get("redis_cache") or "") or next_db_url(settings.redis_url)
    if same_server(url, settings.redis_url) and db_number(url) == db_number(settings.redis_url):
        raise ValidationError("redis_cache must not be the queue Redis (same server and database as redis_queue)")
    return url
