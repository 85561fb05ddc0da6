"""Measurement 1: drain a pre-filled queue, from spawning the worker CLI to the last job run.

The harness polls the job counter every 5 ms: the first time it moves is "first job", the time it
reaches N is "last job". Burst workers exit by themselves; plain Celery has no burst mode and gets
SIGTERM (warm shutdown) at N. CPU is the rusage of the worker's whole tree (pool processes and
rq's work horses included), from spawn to exit, divided by N.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from benchmarks import apps, procs
from benchmarks.common import Plan, probe, say
from benchmarks.env import Env
from benchmarks.workers import WORKERS, Worker

POLL = 0.005
MIN_RATE = 10.0  # jobs/s below which a drain is considered stuck (the deadline)


def _exited(pid: int) -> bool:
    """Whether the child has exited, without reaping it (its rusage is read when reaping)."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def drain_once(env: Env, worker: Worker, workload: str, n: int) -> dict[str, Any]:
    env.flush()
    fill = probe(env, ["fill", worker.system, workload, str(n)], timeout=120 + n / 200)
    r = env.redis
    timeout = 60 + n / MIN_RATE
    log = env.workdir / "logs" / f"{worker.name.replace(' ', '_')}.log"
    log.parent.mkdir(exist_ok=True)
    started = time.perf_counter()
    proc = procs.spawn(worker.command(env, burst=True), env.child_env(), Path(str(worker.cwd(env))), log)
    first_at: float | None = None
    first_count = 0
    with procs.RssSampler(proc.pid) as sampler:
        while True:
            count = int(r.get(apps.COUNTER) or 0)
            now = time.perf_counter()
            if first_at is None and count:
                first_at, first_count = now, count
            if count >= n:
                last_at = now
                break
            if _exited(proc.pid):
                code, _ = procs.reap(proc, 5)
                raise RuntimeError(f"{worker.name} exited ({code}) after {count}/{n} jobs:\n{procs.log_tail(log)}")
            if now - started > timeout:
                procs.kill_group(proc)
                procs.reap(proc, 10)
                raise procs.Timeout(f"{worker.name}: {count}/{n} jobs after {timeout:.0f} s:\n{procs.log_tail(log)}")
            time.sleep(POLL)
        code, usage = procs.reap(proc, 60) if worker.burst_flag else procs.stop(proc, 60)
        exited_at = time.perf_counter()
    assert first_at is not None
    cpu = (usage.ru_utime + usage.ru_stime) if usage else None
    steady = (n - first_count) / (last_at - first_at) if last_at > first_at else None
    return {
        "worker": worker.name,
        "workload": workload,
        "n": n,
        "fill_s": fill["seconds"],
        "e2e_rate": n / (last_at - started),
        "whole_rate": n / (exited_at - started),  # the whole command, spawn to exit (burst workers)
        "steady_rate": steady,
        "spawn_to_first_s": first_at - started,
        "last_to_exit_s": exited_at - last_at,
        "cpu_us_per_job": cpu / n * 1e6 if cpu is not None else None,
        "peak_rss_tree_mb": sampler.peak / 2**20,
        "max_rss_process_mb": usage.ru_maxrss / 1024 if usage else None,
        "exit_code": code,
        "final_count": int(r.get(apps.COUNTER) or 0),
    }


BURST_WORKERS = ("bench worker", "rq worker (fork)")


def run(env: Env, plan: Plan, workers: list[Worker] | None = None) -> list[dict[str, Any]]:
    workers = workers or list(WORKERS)
    results: list[dict[str, Any]] = []
    for workload, n in plan.drain_n.items():
        most = max(plan.reps_for(w.name) for w in workers)
        for rep in range(most):
            for worker in workers:
                if rep >= plan.reps_for(worker.name):
                    continue
                say(f"drain {workload} x{n}: {worker.name} (rep {rep + 1}/{plan.reps_for(worker.name)})")
                try:
                    res = drain_once(env, worker, workload, n)
                except (RuntimeError, procs.Timeout) as exc:
                    say(f"  FAILED: {exc}")
                    results.append({"worker": worker.name, "workload": workload, "n": n, "rep": rep, "error": str(exc)})
                    continue
                res["rep"] = rep
                say(
                    f"  e2e {res['e2e_rate']:.0f} jobs/s, steady {res['steady_rate'] or 0:.0f} jobs/s, "
                    f"first job after {res['spawn_to_first_s']:.2f} s, exit {res['last_to_exit_s']:.2f} s after "
                    f"the last, {res['cpu_us_per_job'] or 0:.0f} CPU us/job, peak RSS {res['peak_rss_tree_mb']:.0f} MB"
                )
                results.append(res)
    # A burst worker as cron or CI runs it: a few thousand jobs, the whole command timed.
    for rep in range(plan.reps):
        for worker in workers:
            if worker.name not in BURST_WORKERS:
                continue
            say(f"burst command, {plan.burst_n:,} no-op jobs: {worker.name} (rep {rep + 1}/{plan.reps})")
            try:
                res = drain_once(env, worker, "noop", plan.burst_n)
            except (RuntimeError, procs.Timeout) as exc:
                say(f"  FAILED: {exc}")
                results.append({"worker": worker.name, "workload": "burst", "n": plan.burst_n, "error": str(exc)})
                continue
            res.update(workload="burst", rep=rep)
            say(f"  whole command {res['whole_rate']:.0f} jobs/s (spawn to exit)")
            results.append(res)
    return results
