"""The job code under test, written into the run's work directory.

The job body is the same everywhere: one Redis ``INCR`` of ``COUNTER`` (the harness watches it to
see the first and the last job run), or a 10 ms sleep then the INCR. benchcelery and plain Celery
jobs use one client per process; rq jobs use rq's own connection (as in the reference).
"""

from __future__ import annotations

from pathlib import Path

COUNTER = "benchmark:counter"
URL_ENV = "BENCHMARK_REDIS_URL"
QUEUE = "default"

BENCH_APP = "bcbench"
SCHED_APP = "bcsched"
PEER_CELERY = "peer_celery"
PEER_RQ = "peer_rq"

# Job paths per system and workload.
JOBS = {
    "bench": {"noop": f"{BENCH_APP}.tasks.incr", "sleep": f"{BENCH_APP}.tasks.sleep_incr"},
    "celery": {"noop": "peer.incr", "sleep": "peer.sleep_incr"},
    "rq": {"noop": f"{PEER_RQ}.incr", "sleep": f"{PEER_RQ}.sleep_incr"},
}

_CLIENT = f'''
import os
import time

import redis

COUNTER = "{COUNTER}"
_client = None
_pid = 0


def _redis():
    global _client, _pid
    if _client is None or _pid != os.getpid():
        _client = redis.Redis.from_url(os.environ["{URL_ENV}"])
        _pid = os.getpid()
    return _client
'''

_BENCH_TASKS = (
    '"""Benchmark jobs (benchcelery)."""\n'
    + _CLIENT
    + """

def incr():
    _redis().incr(COUNTER)


def sleep_incr():
    time.sleep(0.01)
    _redis().incr(COUNTER)
"""
)

_PEER_CELERY = (
    '"""Plain Celery: the same jobs, configured as benchcelery configures Celery (JSON, no results,\n'
    'acks_late, prefetch 1), with kombu\'s stock Redis transport."""\n'
    + _CLIENT
    + f'''
from celery import Celery

app = Celery("peer", set_as_current=False)
app.conf.update(
    broker_url=os.environ["{URL_ENV}"],
    broker_connection_retry_on_startup=True,
    task_serializer="json",
    accept_content=["json"],
    result_backend=None,
    task_ignore_result=True,
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    task_default_queue="{QUEUE}",
    task_default_exchange="{QUEUE}",
    task_default_routing_key="{QUEUE}",
)


@app.task(name="peer.incr")
def incr():
    _redis().incr(COUNTER)


@app.task(name="peer.sleep_incr")
def sleep_incr():
    time.sleep(0.01)
    _redis().incr(COUNTER)
'''
)

_PEER_RQ = f'''"""rq: the same jobs, on rq's own connection."""

import time

from rq import get_current_job

COUNTER = "{COUNTER}"


def incr():
    get_current_job().connection.incr(COUNTER)


def sleep_incr():
    time.sleep(0.01)
    get_current_job().connection.incr(COUNTER)
'''

# 20 scheduled jobs over every kind of event (distinct methods: run ids must not collide).
SCHEDULED_EVENTS: dict[str, object] = {
    "all": [f"{SCHED_APP}.tasks.t{i:02d}" for i in range(4)],
    "hourly": [f"{SCHED_APP}.tasks.t{i:02d}" for i in range(4, 7)],
    "daily": [f"{SCHED_APP}.tasks.t{i:02d}" for i in range(7, 10)],
    "weekly": [f"{SCHED_APP}.tasks.t{i:02d}" for i in range(10, 12)],
    "monthly": [f"{SCHED_APP}.tasks.t{i:02d}" for i in range(12, 14)],
    "yearly": [f"{SCHED_APP}.tasks.t14"],
    "hourly_long": [f"{SCHED_APP}.tasks.t15"],
    "daily_long": [f"{SCHED_APP}.tasks.t16"],
    "cron": {
        "*/5 * * * *": [f"{SCHED_APP}.tasks.t17"],
        "0 3 * * *": [f"{SCHED_APP}.tasks.t18"],
        "15 * * * 1-5": [f"{SCHED_APP}.tasks.t19"],
    },
}
SCHEDULED_JOBS = 20


def write_bench_app(apps_dir: Path) -> None:
    app = apps_dir / BENCH_APP
    app.mkdir(parents=True, exist_ok=True)
    (app / "__init__.py").write_text("")
    (app / "hooks.py").write_text("scheduler_events: dict = {}\n")
    (app / "tasks.py").write_text(_BENCH_TASKS)


def write_sched_app(apps_dir: Path) -> None:
    app = apps_dir / SCHED_APP
    app.mkdir(parents=True, exist_ok=True)
    (app / "__init__.py").write_text("")
    (app / "hooks.py").write_text(f"scheduler_events = {SCHEDULED_EVENTS!r}\n")
    body = "".join(f"\n\ndef t{i:02d}():\n    pass\n" for i in range(SCHEDULED_JOBS))
    (app / "tasks.py").write_text('"""Scheduled jobs of the scheduler benchmark (no-ops)."""\n' + body)


def write_peer_modules(peer_dir: Path) -> None:
    peer_dir.mkdir(parents=True, exist_ok=True)
    (peer_dir / f"{PEER_CELERY}.py").write_text(_PEER_CELERY)
    (peer_dir / f"{PEER_RQ}.py").write_text(_PEER_RQ)
