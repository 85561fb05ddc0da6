"""``python -m benchmarks.lifecycle``: the cost of delayed jobs and retries (broker/delayed.py).

With N (default 100,000) jobs scheduled far ahead in the delayed set:

1. **move cost**: one promote call with 0, 100 and 1,000 of them due (O(due), not O(all)),
2. **idle worker**: Redis commands/s of one idle ``bench worker`` (INFO commandstats, commands inside
   Lua included) with the delayed set empty and with N entries, and the share that delayed jobs
   and pause add (the promoter's moves, the fetch script's read of the paused set),
3. **show-pending-jobs**: wall time of the command (a fresh process) with N scheduled jobs.

Starts a private Redis on a free port and a bench in a temporary directory; prints a Markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from benchcelery.broker.delayed import LATER, Delayed, Entry
from benchcelery.deploy.scaffold import create_bench
from benchcelery.store.server import free_port, start_server, stop_server

BENCH_BIN = str(Path(sys.executable).parent / "bench")


def fill(r: redis.Redis, delayed: Delayed, n: int, due: float, start: int = 0) -> None:
    """Add n entries due at ``due`` (the delay script, pipelined in chunks)."""
    keys = delayed.keys
    for base in range(start, start + n, 1000):
        pipe = r.pipeline(transaction=False)
        script = r.register_script(delayed._delay.script)
        for i in range(base, min(base + 1000, start + n)):
            entry = Entry(f"b{i}", keys.site_list("default", "site1.local", 3), "default", "site1.local",
                          f"site1.local::b{i}", LATER, f'{{"x": {i}}}')  # fmt: skip
            script(keys=[keys.delayed, keys.delayed_data, keys.delayed_ids, keys.scheduled_counts("default")],
                   args=[entry.id, entry.encode(), entry.job_id, entry.site, repr(due), "0", keys.delayed_channel,
                         "", "", 1], client=pipe)  # fmt: skip
        pipe.execute()


def move_cost(r: redis.Redis, delayed: Delayed, n: int) -> list[dict[str, Any]]:
    out = []
    for due_count in (0, 100, 1000):
        fill(r, delayed, due_count, 1.0, start=10_000_000)  # due long ago
        r.config_resetstat()
        started = time.perf_counter()
        moved = delayed.promote().moved
        wall = time.perf_counter() - started
        stats = r.info("commandstats")
        calls = sum(v["calls"] for k, v in stats.items() if k not in ("cmdstat_config", "cmdstat_info"))
        out.append({"delayed": n, "due": due_count, "moved": moved, "ms": wall * 1000, "commands": calls})
        r.delete(delayed.keys.site_list("default", "site1.local", 3), delayed.keys.pending_counts("default"),
                 delayed.keys.wake("default"), delayed.keys.sites("default"))  # fmt: skip
    return out


def idle_commands(r: redis.Redis, root: Path, seconds: float) -> dict[str, float]:
    """Commands/s of one idle worker over ``seconds``, with the lifecycle's own share."""
    log = open(root / "logs" / "bench-lifecycle-worker.log", "wb")  # noqa: SIM115 - the child keeps it
    proc = subprocess.Popen([BENCH_BIN, "worker", "--queue", "default"], cwd=root, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while not r.zcard(f"bc:{root.name}:workers") and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(3)  # started: its first moves and fetches are done
        r.config_resetstat()
        time.sleep(seconds)
        stats = r.info("commandstats")
    finally:
        proc.terminate()
        proc.wait(30)
    calls = {k.removeprefix("cmdstat_"): v["calls"] for k, v in stats.items()}
    total = sum(v for k, v in calls.items() if k not in ("config", "info"))
    # The promoter's move is EVALSHA + TIME + ZRANGEBYSCORE + ZRANGE (only it sends ZRANGE); the fetch
    # script's read of the paused set is its SMEMBERS.
    added = 4 * calls.get("zrange", 0) + calls.get("smembers", 0)
    return {"per_s": total / seconds, "lifecycle_per_s": added / seconds, "without_per_s": (total - added) / seconds}


def pending_time(root: Path, reps: int = 5) -> float:
    times = []
    for _ in range(reps):
        started = time.perf_counter()
        subprocess.run([BENCH_BIN, "--site", "all", "show-pending-jobs"], cwd=root, check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=100_000, help="scheduled jobs (default 100,000)")
    parser.add_argument("--idle-seconds", type=float, default=20.0)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bc-lifecycle-"))
    port = free_port()
    server = start_server(port, work / "redis")
    try:
        url = f"redis://127.0.0.1:{port}"
        bench = create_bench(work / "lc", redis_url=url, example_app=True)
        bench.update_config({"bench_id": "lc"})
        bench.new_site("site1.local", {})
        r = redis.Redis(port=port)
        from benchcelery.bench.keys import Keys

        keys = Keys("lc")
        delayed = Delayed(r, keys)
        (bench.root / "logs").mkdir(exist_ok=True)
        empty = idle_commands(r, bench.root, args.idle_seconds)
        fill(r, delayed, args.n, time.time() + 30 * 86400)
        full = idle_commands(r, bench.root, args.idle_seconds)
        moves = move_cost(r, delayed, args.n)
        shown = pending_time(bench.root)
    finally:
        stop_server(server)
    print(f"| measure ({args.n:,} jobs scheduled 30 days ahead) | value |")
    print("|---|---:|")
    for m in moves:
        print(f"| one promote call, {m['due']:,} due: wall ms / Redis commands | {m['ms']:.2f} / {m['commands']:,} |")
    print(f"| idle worker, delayed set empty: commands/s (of which delayed jobs + pause) | "
          f"{empty['per_s']:.2f} ({empty['lifecycle_per_s']:.2f}) |")  # fmt: skip
    print(f"| idle worker, {args.n:,} scheduled: commands/s (of which delayed jobs + pause) | "
          f"{full['per_s']:.2f} ({full['lifecycle_per_s']:.2f}) |")  # fmt: skip
    print(f"| `bench --site all show-pending-jobs` with {args.n:,} scheduled, median of 5 (s) | {shown:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
