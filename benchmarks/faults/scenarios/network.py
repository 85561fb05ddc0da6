"""A network path that drops packets but keeps the sockets open (benchmarks/blackhole.py) between
a worker and the broker, mid-drain, then heals."""

from __future__ import annotations

import subprocess
import time
from typing import Any

from benchmarks.blackhole import Blackhole
from benchmarks.env import BIN
from benchmarks.faults.state import enqueue, runs, settle, tally, wait_until
from benchmarks.faults.world import LEASE, RESUMED_AFTER, SITE, World


def _doctor_says_stuck(w: World) -> bool:
    out = subprocess.run(
        [str(BIN / "bench"), "--site", SITE, "doctor"], cwd=w.bench.root, env=w.env(), capture_output=True, text=True
    )
    return "Worker stuck:" in out.stdout


def sc_blackhole(w: World, jobs: int, seconds: float) -> dict[str, Any]:
    """The only ``worker-pool 2`` of the queue reaches the broker through a proxy that black-holes
    both directions for ``seconds`` once a third of the jobs ran, then heals: are jobs lost or run
    twice, when does the same process work again, does doctor show it stuck meanwhile. Then the
    worker->Redis direction alone is black-holed and the worker gets a TERM: how long until it exits."""
    w.start_broker([])
    proxy = Blackhole(w.port).start()
    try:
        ids = list(range(jobs))
        enqueue(w, ids, ms=20)
        pool = w.spawn("pool", "blackhole", redis_url=f"redis://127.0.0.1:{proxy.listen_port}/0")
        wait_until(lambda: int(w.c.get("count") or 0) >= jobs // 3, 120, 0.01)
        proxy.block("both")
        blocked = time.monotonic()
        done_at_block = int(w.c.get("count") or 0)
        stuck_s = wait_until(lambda: _doctor_says_stuck(w), seconds, 1.0)
        wait_until(lambda: time.monotonic() - blocked >= seconds, seconds + 1, 0.2)
        done_in_blackhole = int(w.c.get("count") or 0) - done_at_block
        proxy.heal()
        healed = time.monotonic()
        base = int(w.c.get("count") or 0) + RESUMED_AFTER
        resumed = wait_until(lambda: int(w.c.get("count") or 0) >= base, 120, 0.05)
        settled = settle(w, ids, LEASE * 3 + 60)
        all_done_s = time.monotonic() - healed if settled is not None else None
        out = tally(w, ids)
        pool_survived = w.alive(pool, "pool")
        exits = list(w.exits)

        # A TERM while the worker -> Redis direction is black-holed (a warm shutdown, nothing running).
        proxy.block("up")
        term_sent = time.monotonic()
        term_exit_s: float | None = None
        if pool_survived:
            pool.terminate()
            try:
                pool.wait(120)
                term_exit_s = time.monotonic() - term_sent
            except subprocess.TimeoutExpired:
                pass
        proxy.heal()
    finally:
        proxy.stop()
    out.update(
        blackhole_s=seconds,
        jobs_done_during_blackhole=done_in_blackhole,
        doctor_stuck_after_s=stuck_s,
        resumed_s=resumed,
        recover_s=all_done_s,
        settled=settled is not None,
        same_process=pool_survived,
        term_exit_s=term_exit_s,
        runs_total=sum(runs(w).values()),
        worker_exits=exits,
    )
    return out
