"""Measurement 4: idle memory of one worker process tree.

Each worker starts on a queue holding one no-op job; once that job has run (the worker is ready
and has imported what a job needs) the harness waits a few seconds and reads RSS of the main
process and of the whole tree, and PSS/USS (``/proc/<pid>/smaps_rollup``) where readable.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from benchmarks import apps, procs
from benchmarks.common import Plan, probe, say
from benchmarks.env import Env
from benchmarks.workers import WORKERS, Worker

READY_TIMEOUT = 60.0
MB = 2**20


def idle_once(env: Env, worker: Worker, settle: float) -> dict[str, Any]:
    env.flush()
    probe(env, ["fill", worker.system, "noop", "1"], timeout=60)
    log = env.workdir / "logs" / f"idle-{worker.name.replace(' ', '_')}.log"
    log.parent.mkdir(exist_ok=True)
    started = time.perf_counter()
    proc = procs.spawn(worker.command(env, burst=False), env.child_env(), Path(str(worker.cwd(env))), log)
    try:
        while int(env.redis.get(apps.COUNTER) or 0) < 1:
            if proc.poll() is not None:
                tail = procs.log_tail(log)
                raise RuntimeError(f"{worker.name} exited ({proc.returncode}) before running a job:\n{tail}")
            if time.perf_counter() - started > READY_TIMEOUT:
                raise procs.Timeout(f"{worker.name} ran no job within {READY_TIMEOUT:.0f} s:\n{procs.log_tail(log)}")
            time.sleep(0.01)
        ready = time.perf_counter() - started
        time.sleep(settle)
        mem = procs.memory_of(proc.pid)
    finally:
        procs.stop(proc, 30)
    return {
        "worker": worker.name,
        "ready_s": ready,
        "procs": mem.procs,
        "rss_main_mb": mem.rss_main / MB,
        "rss_tree_mb": mem.rss_tree / MB,
        "pss_tree_mb": mem.pss_tree / MB if mem.pss_tree is not None else None,
        "uss_tree_mb": mem.uss_tree / MB if mem.uss_tree is not None else None,
    }


def run(env: Env, plan: Plan, workers: list[Worker] | None = None) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    for rep in range(plan.reps):
        for worker in workers or WORKERS:
            if worker.name == "rq SimpleWorker":
                continue  # the same process as rq's forking worker while idle
            say(f"idle memory: {worker.name} (rep {rep + 1}/{plan.reps})")
            try:
                res = idle_once(env, worker, plan.idle_settle)
            except (RuntimeError, procs.Timeout) as exc:
                say(f"  FAILED: {exc}")
                results.append({"worker": worker.name, "rep": rep, "error": str(exc)})
                continue
            res["rep"] = rep
            pss = f", PSS {res['pss_tree_mb']:.1f} MB" if res["pss_tree_mb"] is not None else ""
            say(f"  {res['procs']} procs, RSS main {res['rss_main_mb']:.1f} MB, tree {res['rss_tree_mb']:.1f} MB{pss}")
            results.append(res)
    env.flush()
    return results
