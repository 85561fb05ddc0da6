"""Scheduled job bodies: each reports (site, what, time) into Redis list ``test:sched:<bench_id>``."""

from __future__ import annotations

import json
import time

import benchcelery
from benchcelery.runtime import get_runtime


def _push(what: str) -> None:
    rt = get_runtime()
    record = {"site": benchcelery.local.site, "what": what, "t": time.time()}
    rt.redis.rpush(f"test:sched:{rt.settings.bench_id}", json.dumps(record))


def tick() -> None:
    _push("tick")


def other() -> None:
    _push("other")


def daily_a() -> None:
    _push("daily_a")


def daily_b() -> None:
    _push("daily_b")


def hourly() -> None:
    _push("hourly")


def daily_long() -> None:
    _push("daily_long")


def cron_job() -> None:
    _push("cron_job")


def boom() -> None:
    raise RuntimeError("scheduled job failed on purpose")


def slow() -> None:
    """Runs until the test sets ``test:release:<bench_id>`` (at most 60 s)."""
    _push("slow-start")
    rt = get_runtime()
    deadline = time.monotonic() + 60
    while not rt.redis.exists(f"test:release:{rt.settings.bench_id}") and time.monotonic() < deadline:
        time.sleep(0.05)
    _push("slow-end")
