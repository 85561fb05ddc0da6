"""Jobs of the example app. Each writes one line to <bench>/logs/jobs_demo.log."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import benchcelery


def _log(line: str) -> None:
    path = Path(benchcelery.local.bench_path or ".") / "logs" / "jobs_demo.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%H:%M:%S")
    with path.open("a") as fh:
        fh.write(f"{stamp} [{benchcelery.local.site}] {line}\n")


def say(message: str, label: str = "?") -> str:
    _log(f"{label}: {message}")
    return message


def add(a: int, b: int) -> int:
    _log(f"add: {a} + {b} = {a + b}")
    return a + b


def slow(seconds: float = 1.0) -> None:
    time.sleep(seconds)
    _log(f"slow: slept {seconds} s")


def fail(message: str = "this job fails on purpose") -> None:
    raise RuntimeError(message)


def tick() -> None:
    _log("tick (scheduled: all)")


def daily_report() -> None:
    _log("daily report (scheduled: daily)")


def before_job(method: str, kwargs: dict) -> None:
    pass


def after_job(method: str, kwargs: dict, result: object = None) -> None:
    pass
