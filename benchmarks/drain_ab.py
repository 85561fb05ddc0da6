"""A drain, old tree against new, interleaved in one run:

    python -m benchmarks.drain_ab --base /path/to/old/checkout [--reps 5] [--n 3000] [--pool prefork|solo]

Each repetition fills ``default`` with N no-op jobs (one INCR each, the harness's probe) and runs
``bench worker --quiet --burst`` to the end, once with the old tree first on PYTHONPATH (``--base``:
e.g. ``git worktree add /tmp/base <commit>``) and once with this one, on the harness's private
Redis (env.py). Per job: the drain's rate (spawn to exit, start-up and shutdown included), the
worker tree's CPU (rusage), and Redis's CPU and commands over the drain (``INFO cpu`` /
``INFO commandstats`` deltas; the jobs' INCRs are in the CPU, not in the commands). Medians are
printed; compare within the run only.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks import apps, env, procs
from benchmarks.startup_ab import child_env

HERE = Path(__file__).resolve().parent.parent


def _redis(world: env.Env) -> tuple[float, int]:
    cpu = world.redis.info("cpu")
    stats = world.redis.info("commandstats")
    calls = sum(int(v["calls"]) for k, v in stats.items() if not k.startswith("cmdstat_info"))
    return float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"]), calls


def drain(world: env.Env, root: Path, n: int, pool: str) -> dict[str, float]:
    world.flush()
    fill = [sys.executable, "-m", "benchmarks.probe", "fill", "bench", "noop", str(n)]
    subprocess.run(fill, env=child_env(world, root), cwd=world.bench.root, check=True, capture_output=True)
    world.redis.config_resetstat()
    cpu0, calls0 = _redis(world)
    started = time.monotonic()
    cmd = [str(env.BIN / "bench"), "worker", "--quiet", "--burst", "--pool", pool]
    proc = procs.spawn(cmd, child_env(world, root), world.bench.root)
    _code, usage = procs.reap(proc, 60 + n / 50)
    seconds = time.monotonic() - started
    cpu1, calls1 = _redis(world)
    done = int(world.redis.get(apps.COUNTER) or 0)
    if done != n:
        raise RuntimeError(f"{done} of {n} jobs ran")
    worker_cpu = (usage.ru_utime + usage.ru_stime) if usage else float("nan")
    return {
        "jobs_per_s": n / seconds,
        "worker_cpu_us": worker_cpu / n * 1e6,
        "redis_cpu_us": (cpu1 - cpu0) / n * 1e6,
        "redis_commands": (calls1 - calls0 - n) / n,  # less the jobs' own INCRs (and the GET below)
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.drain_ab")
    parser.add_argument("--base", required=True, type=Path, help="a checkout of the old code")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--pool", default="prefork", choices=("prefork", "solo"))
    args = parser.parse_args(argv)
    variants = {"base": args.base.resolve(), "new": HERE}
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
    world = env.create()
    try:
        for rep in range(args.reps):
            for name, root in variants.items():
                res = drain(world, root, args.n, args.pool)
                runs[name].append(res)
                print(f"rep {rep + 1} {name}: " + ", ".join(f"{k} {v:,.1f}" for k, v in res.items()), flush=True)
    finally:
        world.close()
    print(f"\nmedians, bench worker --pool {args.pool}, {args.n:,} jobs, {args.reps} runs each")
    med: dict[str, dict[str, Any]] = {
        name: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for name, rs in runs.items()
    }
    for key in med["new"]:
        base, new = med["base"][key], med["new"][key]
        print(f"  {key}: base {base:,.1f}  new {new:,.1f}  new/base {new / base:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
