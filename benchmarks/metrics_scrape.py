"""Cost of one ``bench metrics`` scrape with a big backlog: ``python -m benchmarks.metrics_scrape``.

Builds the benchmark world (private Redis on a free port, a 20-site bench), fills N jobs
(default 100,000) and measures ``read_figures`` (everything one scrape reads) with Redis's own
clock: the CPU time of Redis's main thread (INFO cpu) over a batch of scrapes, divided by their
number (it includes reading requests and writing replies: all the time Redis was busy for them).
Three fills: sites taking turns in batches of 25 and of 500 jobs, and site after site (the worst
case for the per-site oldest-age window, oldest.SITE_WINDOW). Prints a JSON summary; writes nothing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

from benchmarks import apps, env
from benchmarks.common import say

SKIP = {"slowlog", "config"}


def fill(world: env.Env, n: int, batch: int) -> None:
    """``n`` jobs over the sites, each site enqueuing ``batch`` jobs in turn."""
    import benchcelery

    world.flush()
    method = apps.JOBS["bench"]["noop"]
    per_site = n // env.SITES
    order = [(i, batch) for _ in range(per_site // batch) for i in range(env.SITES)]
    for i, count in order:
        benchcelery.init(site=env.site_name(i), bench_path=str(world.bench.root))
        for start in range(0, count, 5000):
            benchcelery.enqueue_many([{"method": method, "queue": apps.QUEUE}] * min(5000, count - start))


def _cpu(r: Any) -> float:
    info = r.info("cpu")
    if "used_cpu_user_main_thread" in info:
        return float(info["used_cpu_user_main_thread"]) + float(info["used_cpu_sys_main_thread"])
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def redis_time_us(r: Any, action: Any, reps: int) -> tuple[float, float]:
    """(Redis main-thread CPU µs, wall s) per call of ``action()``, averaged over ``reps`` calls
    (the two INFO calls that bracket them are included: an upper bound)."""
    before = _cpu(r)
    started = time.perf_counter()
    for _ in range(reps):
        action()
    wall = time.perf_counter() - started
    return (_cpu(r) - before) * 1e6 / reps, wall / reps


def commands(r: Any, action: Any) -> dict[str, int]:
    """Top-level commands one ``action()`` sends (the slow log at threshold 0; script internals
    show up too, so this is for the record, not for timing)."""
    r.config_set("slowlog-log-slower-than", 0)
    r.config_set("slowlog-max-len", 100_000)
    r.slowlog_reset()
    action()
    entries = r.slowlog_get(100_000)
    r.config_set("slowlog-log-slower-than", 10_000)
    out: dict[str, int] = {}
    for e in entries:
        name = e["command"].split(b" ")[0].decode().upper()
        if name.lower() not in SKIP:
            out[name] = out.get(name, 0) + 1
    return out


def measure(world: env.Env, reps: int) -> dict[str, Any]:
    import benchcelery
    from benchcelery.diagnostics.figures import read_figures

    rt = benchcelery.init(bench_path=str(world.bench.root))
    read_figures(rt)  # warm: scripts loaded, connection open
    runs = [redis_time_us(world.redis, lambda: read_figures(rt), 5) for _ in range(reps)]
    fig = read_figures(rt)
    q = next(x for x in fig.queues if x.queue == apps.QUEUE)
    return {
        "redis_cpu_ms": round(statistics.median(u for u, _ in runs) / 1000, 3),
        "redis_cpu_ms_max": round(max(u for u, _ in runs) / 1000, 3),
        "wall_ms": round(statistics.median(w for _, w in runs) * 1000, 3),
        "commands": commands(world.redis, lambda: read_figures(rt)),
        "pending": sum(q.pending.values()),
        "sites_with_oldest_age": len(q.site_oldest_enqueued_at),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--reps", type=int, default=20)
    args = parser.parse_args()
    world = env.create()
    try:
        out: dict[str, Any] = {"jobs": args.jobs, "sites": env.SITES}
        per_site = args.jobs // env.SITES
        for label, batch in (("sites_take_turns_25", 25), ("sites_take_turns_500", 500), ("site_after_site", per_site)):
            say(f"filling {args.jobs} jobs over {env.SITES} sites ({label})")
            fill(world, args.jobs, batch)
            out[label] = measure(world, args.reps)
            say(f"  {label}: {json.dumps(out[label])}")
        print(json.dumps(out, indent=2))
    finally:
        world.close()


if __name__ == "__main__":
    main()
