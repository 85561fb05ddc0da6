"""An idle ``bench worker``: the Redis commands it sends per second, and enqueue -> start latency."""

from __future__ import annotations

import time
from typing import Any

from benchmarks.faults.state import enqueue, wait_until
from benchmarks.faults.world import SITE, STAMP, World


def _calls(w: World) -> dict[str, int]:
    stats = w.b.info("commandstats")
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}


def sc_idle(w: World, seconds: float, samples: int) -> dict[str, Any]:
    """Idle cost of one ``bench worker`` (Redis commands/s) and enqueue -> start latency."""
    w.start_broker([])
    worker = w.spawn("worker", "idle")
    enqueue(w, [70_000], method=STAMP)  # wait until it is up and has run a job
    wait_until(lambda: w.c.hget("stamps", 70_000) is not None, 60)
    time.sleep(5)
    before = _calls(w)
    time.sleep(seconds)
    after = _calls(w)
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    delta["info"] = delta.get("info", 0) - 1  # our own INFO
    per_s = {k: round(v / seconds, 2) for k, v in sorted(delta.items(), key=lambda kv: -kv[1]) if v > 0}
    import benchcelery

    benchcelery.init(site=SITE, bench_path=w.bench.root)
    lat = []
    for i in range(samples):
        n = 70_001 + i
        time.sleep(1.0)
        t0 = time.time()
        benchcelery.enqueue(STAMP, n=n)
        if wait_until(lambda n=n: w.c.hget("stamps", n) is not None, 10, 0.005) is not None:
            lat.append((float(w.c.hget("stamps", n)) - t0) * 1000)
    w.stop(worker, "idle")
    lat.sort()
    return {
        "idle_seconds": seconds,
        "commands_per_s": round(sum(delta.values()) / seconds, 2),
        "by_command_per_s": per_s,
        "latency_ms": {
            "median": lat[len(lat) // 2] if lat else None,
            "p90": lat[int(len(lat) * 0.9)] if lat else None,
            "max": lat[-1] if lat else None,
            "n": len(lat),
        },
        "worker_exits": list(w.exits),
    }
