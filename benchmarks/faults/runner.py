"""Runs the chosen scenarios in turn on one world and writes RELIABILITY.md from their results."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import procs
from benchmarks.common import say
from benchmarks.faults import report
from benchmarks.faults.plan import Sizes, sizes
from benchmarks.faults.scenarios.broker import sc_crash, sc_crash_reps, sc_freeze
from benchmarks.faults.scenarios.failover import sc_failover_enqueue
from benchmarks.faults.scenarios.idle import sc_idle
from benchmarks.faults.scenarios.lifecycle import sc_lifecycle
from benchmarks.faults.scenarios.network import sc_blackhole
from benchmarks.faults.scenarios.records import sc_poison, sc_retry
from benchmarks.faults.scenarios.round3 import sc_empty_restart, sc_oom, sc_pool_retake, sc_stall_held
from benchmarks.faults.scenarios.workers import sc_cold, sc_kill, sc_long, sc_orphan
from benchmarks.faults.world import LEASE, World, create_world

# Each scenario by name: how it runs with the sizes of this run.
SCENARIO_RUNS: dict[str, Callable[[World, Sizes], dict[str, Any]]] = {
    "kill": lambda w, s: sc_kill(w, s.jobs, s.kill_every, s.kill_budget),
    "kill-fast": lambda w, s: sc_kill(w, s.jobs, s.kill_every / 2, s.kill_budget),  # twice the kills
    "orphan": lambda w, s: sc_orphan(w, s.orphan_reps),
    "long": lambda w, s: sc_long(w, s.long_s),
    "crash-always": lambda w, s: sc_crash_reps(w, "always", s.crash_jobs, s.crash_reps),
    "crash-everysec": lambda w, s: sc_crash_reps(w, "everysec", s.crash_jobs, s.crash_reps),
    "noaof": lambda w, s: sc_crash(w, None, s.crash_jobs),
    "pause": lambda w, s: sc_freeze(w, "pause", s.freeze_jobs, s.freeze_s),
    "stop": lambda w, s: sc_freeze(w, "stop", s.freeze_jobs, s.freeze_s),
    "pause-long": lambda w, s: sc_freeze(w, "pause", s.freeze_jobs, LEASE + 15),
    "poison": lambda w, s: sc_poison(w),
    "retry": lambda w, s: sc_retry(w, s.retry_reps),
    "cold": lambda w, s: sc_cold(w, s.cold_reps),
    "idle": lambda w, s: sc_idle(w, s.idle_s, s.latency_samples),
    "oom": lambda w, s: sc_oom(w, s.oom_jobs, s.oom_s),
    "empty-restart": lambda w, s: sc_empty_restart(w, s.empty_jobs),
    "stall-held": lambda w, s: sc_stall_held(w, s.stall_reps, s.stall_s),
    "pool-retake": lambda w, s: sc_pool_retake(w, s.retake_job_s, s.retake_stall_s),
    "blackhole": lambda w, s: sc_blackhole(w, s.blackhole_jobs, s.blackhole_s),
    "failover-enqueue": lambda w, s: sc_failover_enqueue(w, 20.0),
    "lifecycle": lambda w, s: sc_lifecycle(w, s.life_jobs, s.life_kill_every, s.life_budget, s.life_redis_kills),
}


def run_one(w: World, name: str, s: Sizes) -> dict[str, Any]:
    if name not in SCENARIO_RUNS:
        raise ValueError(name)
    return SCENARIO_RUNS[name](w, s)


def run(
    quick: bool, only: list[str], jobs: int | None, kill_every: float | None, output: Path, keep: bool, update: bool
) -> int:
    s = sizes(quick, jobs, kill_every)
    workdir = Path(tempfile.mkdtemp(prefix="benchcelery-faults-"))
    say(f"faults: {'quick' if quick else 'full'} run of {', '.join(only)} in {workdir}")
    w = create_world(workdir)
    results: dict[str, Any] = {}
    began = time.time()
    try:
        for name in only:
            say(f"=== {name} ===")
            t0 = time.monotonic()
            try:
                res = run_one(w, name, s)
            except Exception as exc:  # a broken scenario is reported, the others still run
                res = {"error": f"{type(exc).__name__}: {exc}", "worker_exits": list(w.exits)}
            finally:
                procs.kill_all()
                w.stop_broker()
            res["duration_s"] = round(time.monotonic() - t0, 1)
            results[name] = res
            say("  " + json.dumps({k: v for k, v in res.items() if not isinstance(v, list | dict)}, default=str))
            w.exits = []
            w.c.flushall()
    finally:
        procs.kill_all()
        w.close()
    meta = {
        "started": datetime.fromtimestamp(began, UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "duration_s": round(time.time() - began),
        "mode": "quick" if quick else "full",
        "sizes": s.__dict__,
        "machine": _machine(w),
    }
    md = report.write({"meta": meta, "scenarios": results}, output, update)
    say(f"wrote {md}")
    if keep:
        say(f"kept {workdir}")
    else:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def _machine(w: World) -> dict[str, Any]:
    version = subprocess.run([w.binary, "--version"], capture_output=True, text=True).stdout.strip()
    return {
        "cpus": os.cpu_count(),
        "load_1m": round(os.getloadavg()[0], 2),
        "python": sys.version.split()[0],
        "redis": version,
    }
