"""Before/after of issue 28 in one run: two checkouts of benchcelery, measured interleaved.

    python -m benchmarks.startup_ab --base OLD_TREE [--reps 9] [--only first,memory,enqueue,latency,latency-solo]

``--base`` (OLD_TREE) is a source tree of the old code (``git worktree add /tmp/base main`` or ``git archive
main | tar -x -C /tmp/base``); "new" is this checkout. Each repetition runs each variant in a fresh
interpreter on the harness's private Redis and bench (env.py), the variant's tree first on
PYTHONPATH. Medians are printed; on a shared machine the spread is wide, so compare CPU figures
as well as wall ones.

- first: ``bench worker --quiet --burst`` with one job waiting, spawn -> the job's start (wall), and
  the CPU the worker's processes used until then (a hook on Celery's ``task_prerun``, startup_first.py).
- memory: RSS and PSS of ``bench worker --quiet`` (main process and its pool process) after one job
  and a 2 s settle.
- enqueue: 10,000 single ``benchcelery.enqueue`` calls from one process (client CPU and wall per
  job), against huey's single enqueue in the same round (``benchmarks.peers.huey_app:single``).
- latency, latency-solo: enqueue -> start against an idle ``bench worker`` (``--pool solo``), as the
  field harness measures it (``benchmarks.peers.probe latency``: 100 jobs one at a time, 10-40 ms
  apart, each until its INCR shows as a keyspace notification); median and p99.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks import apps, env, procs

HERE = Path(__file__).resolve().parent.parent
ENQUEUE = """
import json, sys, time
which, n = sys.argv[1], int(sys.argv[2])
if which == "huey":
    from benchmarks.peers.huey_app import incr as call
else:
    import benchcelery
    benchcelery.init(site=sys.argv[3], bench_path=sys.argv[4])
    def call():
        benchcelery.enqueue(sys.argv[5])
for _ in range(200):
    call()
cpu0, wall0 = time.process_time(), time.perf_counter()
for _ in range(n):
    call()
cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
print(json.dumps({"cpu_us": cpu / n * 1e6, "wall_us": wall / n * 1e6}))
"""


def child_env(world: env.Env, root: Path) -> dict[str, str]:
    out = world.child_env()
    out["PYTHONPATH"] = f"{root}:{out['PYTHONPATH']}"
    return out


def fill_one(world: env.Env, root: Path) -> None:
    world.flush()
    probe = [sys.executable, "-m", "benchmarks.probe", "fill", "bench", "noop", "1"]
    subprocess.run(probe, env=child_env(world, root), cwd=world.bench.root, check=True, capture_output=True)


def first(world: env.Env, root: Path) -> dict[str, float]:
    fill_one(world, root)
    e = child_env(world, root)
    e["AB_SPAWN_AT"] = repr(time.time())
    cmd = [sys.executable, str(Path(__file__).with_name("startup_first.py")), "worker", "--quiet", "--burst"]
    out = subprocess.run(cmd, env=e, cwd=world.bench.root, capture_output=True, text=True, timeout=120)
    found = re.search(r"FIRST wall=(\S+) cpu=(\S+)", out.stderr)
    if not found:
        raise RuntimeError(out.stderr[-1500:])
    return {"wall_s": float(found[1]), "cpu_s": float(found[2])}


def _first_job(world: env.Env, proc: Any) -> None:
    """Wait (60 s at most) until the worker ``proc`` ran the job fill_one left."""
    deadline = time.monotonic() + 60
    while int(world.redis.get(apps.COUNTER) or 0) < 1:
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError("the worker ran no job")
        time.sleep(0.01)


def memory(world: env.Env, root: Path) -> dict[str, float]:
    fill_one(world, root)
    proc = procs.spawn([str(env.BIN / "bench"), "worker", "--quiet"], child_env(world, root), world.bench.root)
    try:
        _first_job(world, proc)
        time.sleep(2)
        mem = procs.memory_of(proc.pid)
    finally:
        procs.stop(proc, 20)
    return {
        "procs": mem.procs,
        "rss_main_mb": mem.rss_main / 2**20,
        "rss_tree_mb": mem.rss_tree / 2**20,
        "pss_tree_mb": (mem.pss_tree or 0) / 2**20,
    }


def latency(world: env.Env, root: Path, pool: str, n: int = 100) -> dict[str, float]:
    fill_one(world, root)
    cmd = [str(env.BIN / "bench"), "worker", "--quiet", "--pool", pool]
    proc = procs.spawn(cmd, child_env(world, root), world.bench.root)
    try:
        _first_job(world, proc)
        time.sleep(1)
        world.redis.config_set("notify-keyspace-events", "K$")
        probe = [sys.executable, "-m", "benchmarks.peers.probe", "latency", "bench_enqueue", str(n), "--budget", "30"]
        out = subprocess.run(
            probe, env=child_env(world, root), cwd=world.bench.root, check=True, capture_output=True, text=True,
            timeout=120,
        )  # fmt: skip
    finally:
        world.redis.config_set("notify-keyspace-events", "")
        procs.stop(proc, 20)
    row = json.loads(out.stdout)
    return {"median_ms": row["median_ms"], "p99_ms": row["p99_ms"]}


def enqueue(world: env.Env, root: Path, which: str, n: int = 10_000) -> dict[str, float]:
    world.flush()
    args = [which, str(n), env.site_name(0), str(world.bench.root), apps.JOBS["bench"]["noop"]]
    out = subprocess.run(
        [sys.executable, "-c", ENQUEUE, *args], env=child_env(world, root), cwd=world.bench.root, check=True,
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.startup_ab")
    parser.add_argument("--base", required=True, type=Path, help="source tree of the old benchcelery")
    parser.add_argument("--reps", type=int, default=9)
    parser.add_argument("--only", default="first,memory,enqueue")
    args = parser.parse_args(argv)
    variants = {"base": args.base.resolve(), "new": HERE}
    world = env.create()
    results: dict[str, dict[str, list[dict[str, float]]]] = {}
    try:
        for rep in range(args.reps):
            for what in args.only.split(","):
                for name, root in variants.items():
                    if what == "first":
                        row = first(world, root)
                    elif what == "memory":
                        row = memory(world, root)
                    elif what.startswith("latency"):
                        row = latency(world, root, "solo" if what == "latency-solo" else "prefork")
                    else:
                        row = enqueue(world, root, "bench")
                        huey = enqueue(world, root, "huey")
                        row |= {"huey_wall_us": huey["wall_us"], "huey_cpu_us": huey["cpu_us"]}
                        row["rate_vs_huey"] = row["huey_wall_us"] / row["wall_us"]
                    results.setdefault(what, {}).setdefault(name, []).append(row)
                    print(rep, what, name, {k: round(v, 3) for k, v in row.items()}, flush=True)
    finally:
        world.close()
    for what, by_variant in results.items():
        for name, rows in by_variant.items():
            medians: dict[str, Any] = {k: round(statistics.median(r[k] for r in rows), 3) for k in rows[0]}
            print(f"{what} {name} medians of {len(rows)}: {medians}")


if __name__ == "__main__":
    main(sys.argv[1:])
