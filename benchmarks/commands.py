"""Measurement 3: operator commands as an operator runs them (a cold process, spawn to exit).

Backlogs are filled with each system's own bulk API: benchcelery's ``enqueue_many`` spread evenly
over the bench's 20 sites, rq's ``enqueue_many`` into its ``default`` queue (rq has no sites:
Frappe's sites share the queues).
"""

from __future__ import annotations

import statistics
import sys
from typing import Any

from benchmarks import apps, procs
from benchmarks.common import Plan, probe, say
from benchmarks.env import BIN, SITES, Env

TIMEOUT = 120.0


def operator_commands(env: Env) -> dict[str, list[str]]:
    site = env.site
    bench = str(BIN / "bench")
    return {
        "bench show-pending-jobs": [bench, "--site", site, "show-pending-jobs"],
        "bench doctor --no-db": [bench, "--site", site, "doctor", "--no-db"],
        "bench scheduler status": [bench, "--site", site, "scheduler", "status"],
        "rq info": [str(BIN / "rq"), "info", "--url", env.url],
    }


def startup_commands(env: Env) -> dict[str, list[str]]:
    return {
        "python -c pass": [sys.executable, "-c", "pass"],
        "bench --help": [str(BIN / "bench"), "--help"],
        "rq --help": [str(BIN / "rq"), "--help"],
        "celery --help": [str(BIN / "celery"), "--help"],
        # one job from the shell, as a script or cron line does it
        "bench enqueue": [str(BIN / "bench"), "--site", env.site, "enqueue", apps.JOBS["bench"]["noop"]],
        "rq enqueue": [str(BIN / "rq"), "enqueue", "--url", env.url, "-q", apps.QUEUE, apps.JOBS["rq"]["noop"]],
    }


def _time(env: Env, cmd: list[str]) -> tuple[float, int]:
    code, seconds, out = procs.run(cmd, env.child_env(), env.bench.root, TIMEOUT)
    if code not in (0, 1):
        raise RuntimeError(f"{' '.join(cmd)} exited {code}:\n{out[-2000:]}")
    return seconds, code


def _fill_to(env: Env, have: int, want: int) -> int:
    if want > have:
        extra = want - have
        say(f"  filling the backlog to {want:,} jobs (benchcelery over {SITES} sites, and rq)")
        b = probe(env, ["fill", "bench", "noop", str(extra), "--sites", str(SITES)], timeout=120 + extra / 100)
        r = probe(env, ["fill", "rq", "noop", str(extra)], timeout=120 + extra / 100)
        say(f"  filled in {b['seconds']:.1f} s (benchcelery) and {r['seconds']:.1f} s (rq)")
    return want


def run(env: Env, plan: Plan) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    cmds = operator_commands(env)
    env.flush()
    have = 0
    for backlog in plan.backlogs:
        have = _fill_to(env, have, backlog)
        for cmd in cmds.values():
            _time(env, cmd)  # warm the page cache; not recorded
        for rep in range(plan.reps):
            for name, cmd in cmds.items():
                say(f"command with {backlog:,} pending: {name} (rep {rep + 1}/{plan.reps})")
                try:
                    seconds, code = _time(env, cmd)
                except Exception as exc:
                    say(f"  FAILED: {exc}")
                    results.append({"kind": "operator", "command": name, "backlog": backlog, "error": str(exc)})
                    continue
                say(f"  {seconds:.3f} s (exit {code})")
                results.append(
                    {
                        "kind": "operator",
                        "command": name,
                        "backlog": backlog,
                        "rep": rep,
                        "seconds": seconds,
                        "exit_code": code,
                    }
                )
    env.flush()
    for rep in range(plan.reps):
        for name, cmd in startup_commands(env).items():
            say(f"cold start: {name} (rep {rep + 1}/{plan.reps}, median of {plan.startup_runs})")
            try:
                _time(env, cmd)
                times = [_time(env, cmd)[0] for _ in range(plan.startup_runs)]
            except Exception as exc:
                say(f"  FAILED: {exc}")
                results.append({"kind": "startup", "command": name, "error": str(exc)})
                continue
            seconds = statistics.median(times)
            say(f"  {seconds:.3f} s")
            results.append({"kind": "startup", "command": name, "rep": rep, "seconds": seconds, "runs": times})
    return results
