"""Helpers shared by the measurements: progress output, probes, summaries."""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from benchmarks import procs
from benchmarks.env import Env

_T0 = time.monotonic()


def say(message: str) -> None:
    elapsed = time.monotonic() - _T0
    print(f"[{int(elapsed // 60):02d}:{elapsed % 60:04.1f}] {message}", file=sys.stderr, flush=True)


def probe(env: Env, args: Sequence[str], timeout: float) -> dict[str, Any]:
    """Run ``python -m benchmarks.probe ARGS`` in a fresh interpreter; its JSON output."""
    code, _, out = procs.run([sys.executable, "-m", "benchmarks.probe", *args], env.child_env(), env.workdir, timeout)
    if code != 0:
        raise RuntimeError(f"probe {' '.join(args)} failed ({code}):\n{out[-3000:]}")
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


@dataclass
class Summary:
    median: float
    low: float
    high: float
    n: int

    def as_dict(self) -> dict[str, float | int]:
        return {"median": self.median, "min": self.low, "max": self.high, "n": self.n}


def summary(values: Iterable[float | None]) -> Summary | None:
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return None
    return Summary(statistics.median(vals), min(vals), max(vals), len(vals))


@dataclass
class Plan:
    """Sizes and repetitions of one run (full or ``--quick``)."""

    quick: bool
    reps: int
    drain_n: dict[str, int]
    drain_reps: dict[str, int] = field(default_factory=dict)  # per worker name; default ``reps``
    enqueue_n: int = 10_000
    burst_n: int = 3_000  # whole-command burst runs (bench worker vs rq's forking worker)
    backlogs: tuple[int, ...] = (0, 100, 10_000, 100_000)
    startup_runs: int = 5
    idle_settle: float = 3.0
    sched_idle_ticks: int = 5

    def reps_for(self, name: str) -> int:
        return self.drain_reps.get(name, self.reps)


def plan(quick: bool, reps: int | None) -> Plan:
    if quick:
        r = reps or 1
        return Plan(
            quick=True,
            reps=r,
            drain_n={"noop": 2_000, "sleep": 400},
            drain_reps={},
            enqueue_n=2_000,
            burst_n=1_000,
            backlogs=(0, 100, 10_000, 100_000),
            startup_runs=3,
            idle_settle=2.0,
            sched_idle_ticks=3,
        )
    r = reps or 3
    # rq's forking worker drains ~40 no-op jobs/s here (10,000 jobs ~ 4 min): one repetition
    # (two for its pool) keeps the whole run near 35 minutes.
    return Plan(
        quick=False,
        reps=r,
        drain_n={"noop": 10_000, "sleep": 2_000},
        drain_reps={"rq worker (fork)": min(r, 1), "rq worker-pool 2": min(r, 2)},
    )
