"""Runs the chosen scenarios in turn on one world and writes RELIABILITY.md from their results."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import procs
from benchmarks.common import say
from benchmarks.faults import report
from benchmarks.faults.plan import Sizes, sizes
from benchmarks.faults.scenarios.broker import sc_crash, sc_crash_reps, sc_freeze
from benchmarks.faults.scenarios.idle import sc_idle
from benchmarks.faults.scenarios.lifecycle import sc_lifecycle
from benchmarks.faults.scenarios.records import sc_poison, sc_retry
from benchmarks.faults.scenarios.round3 import sc_empty_restart, sc_oom, sc_pool_retake, sc_stall_held
from benchmarks.faults.scenarios.workers import sc_cold, sc_kill, sc_long, sc_orphan
from benchmarks.faults.world import LEASE, World, create_world


def run_one(w: World, name: str, s: Sizes) -> dict[str, Any]:
    if name == "kill":
        return sc_kill(w, s.jobs, s.kill_every, s.kill_budget)
    if name == "kill-fast":  # twice as many kills: half the period
        return sc_kill(w, s.jobs, s.kill_every / 2, s.kill_budget)
    if name == "orphan":
        return sc_orphan(w, s.orphan_reps)
    if name == "long":
        return sc_long(w, s.long_s)
    if name == "crash-always":
        return sc_crash_reps(w, "always", s.crash_jobs, s.crash_reps)
    if name == "crash-everysec":
        return sc_crash_reps(w, "everysec", s.crash_jobs, s.crash_reps)
    if name == "noaof":
        return sc_crash(w, None, s.crash_jobs)
    if name in ("pause", "stop"):
        return sc_freeze(w, name, s.freeze_jobs, s.freeze_s)
    if name == "pause-long":
        return sc_freeze(w, "pause", s.freeze_jobs, LEASE + 15)
    if name == "poison":
        return sc_poison(w)
    if name == "retry":
        return sc_retry(w, s.retry_reps)
    if name == "cold":
        return sc_cold(w, s.cold_reps)
    if name == "idle":
        return sc_idle(w, s.idle_s, s.latency_samples)
    return run_round3(w, name, s)


def run_round3(w: World, name: str, s: Sizes) -> dict[str, Any]:
    if name == "oom":
        return sc_oom(w, s.oom_jobs, s.oom_s)
    if name == "empty-restart":
        return sc_empty_restart(w, s.empty_jobs)
    if name == "stall-held":
        return sc_stall_held(w, s.stall_reps, s.stall_s)
    if name == "pool-retake":
        return sc_pool_retake(w, s.retake_job_s, s.retake_stall_s)
    if name == "lifecycle":
        return sc_lifecycle(w, s.life_jobs, s.life_kill_every, s.life_budget, s.life_redis_kills)
    raise ValueError(name)


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
