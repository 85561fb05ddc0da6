"""What one fetch script call costs Redis, old tree against new, in one run:

    python -m benchmarks.fetch_script_cost [--base /path/to/old/checkout] [--n 3000] [--reps 3]

N jobs are enqueued (``benchcelery.enqueue``), then taken one fetch at a time as a busy worker
takes them (each fetch carrying the previous job's ack; queues short, default, long), straight
from Python with no worker around it. Around the loop Redis's ``INFO commandstats`` says what the
EVALSHA calls cost: microseconds per call (the script's whole run, the commands inside it
included) and, of that, the commands run inside the script. Each variant runs in a fresh
interpreter with its own tree first on PYTHONPATH (``--base``: a checkout of the old code, e.g.
``git worktree add /tmp/base <commit>``), interleaved (base, new, base, new, ...) on the harness's
private Redis; medians are printed. No worker process runs, so the figures are the script's own,
without the event-loop and pool noise of a drain (``python -m benchmarks.redis_cost``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks import env
from benchmarks.common import probe
from benchmarks.startup_ab import child_env

HERE = Path(__file__).resolve().parent.parent
QUEUES = ["short", "default", "long"]
LOOP = """
import json, sys
import redis
from benchcelery.bench.keys import Keys
from benchcelery.broker.delivery import Delivery, new_token

url, bench_id, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
queues = sys.argv[4].split(",")
r = redis.Redis.from_url(url)
d = Delivery(r, Keys(bench_id))
r.config_resetstat()
acks, taken = [], 0
while True:
    token = new_token("w")
    fetched = d.fetched(r.evalsha(*d.fetch_command(queues, token, acks)))
    if fetched.taken is None:
        break
    taken += 1
    acks = [(fetched.taken.tag, token)]
stats = r.info("commandstats")
calls = stats["cmdstat_evalsha"]["calls"]
own = ("cmdstat_evalsha", "cmdstat_info", "cmdstat_config")  # the script itself, the loop's INFO and RESETSTAT
inner = {k: v for k, v in stats.items() if not k.startswith(own)}
print(json.dumps({"taken": taken, "evalsha_us": stats["cmdstat_evalsha"]["usec"] / calls,
                  "inner_us": sum(v["usec"] for v in inner.values()) / calls,
                  "inner_commands": sum(v["calls"] for v in inner.values()) / calls}))
"""


def one(world: env.Env, root: Path, n: int) -> dict[str, Any]:
    world.flush()
    probe(world, ["enqueue", "bench_enqueue", str(n)], timeout=120 + n / 100)
    bench_id = world.bench.bench_id
    out = subprocess.run(
        [sys.executable, "-c", LOOP, world.url, bench_id, str(n), ",".join(QUEUES)],
        env=child_env(world, root),
        cwd=world.workdir,  # not this checkout: "-c" puts the working directory first on sys.path
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fetch_script_cost")
    parser.add_argument("--base", type=Path, help="a checkout of the old code (default: only this tree)")
    parser.add_argument("--n", type=int, default=3000, help="jobs taken per run (default 3000)")
    parser.add_argument("--reps", type=int, default=3, help="runs per variant (default 3)")
    args = parser.parse_args(argv)
    variants = {"new": HERE}
    if args.base:
        variants = {"base": args.base.resolve(), **variants}
    world = env.create()
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    try:
        for rep in range(args.reps):
            for name, root in variants.items():
                res = one(world, root, args.n)
                runs[name].append(res)
                print(f"rep {rep + 1} {name}: " + ", ".join(f"{k} {v:.1f}" for k, v in res.items()), flush=True)
    finally:
        world.close()
    print("\nmedians (µs per EVALSHA; inner = the commands run inside the script)")
    for name, results in runs.items():
        med = {k: statistics.median(r[k] for r in results) for k in ("evalsha_us", "inner_us", "inner_commands")}
        evalsha, inner, commands = med["evalsha_us"], med["inner_us"], med["inner_commands"]
        print(f"  {name}: EVALSHA {evalsha:.1f} µs, inner {inner:.1f} µs in {commands:.1f} commands")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
