"""A Sentinel failover while jobs are enqueued one by one and a worker pool drains them.

Its own Redis set (a master, a replica, three sentinels with ``down-after-milliseconds 2000``) and
its own bench on ``sentinel://`` with ``enqueue_wait_replicas: 1``; jobs are counted on the world's
counter Redis like every other scenario's.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import redis

from benchcelery.deploy.scaffold import add_app, create_bench
from benchcelery.store.server import free_port, start_server, stop_server
from benchmarks import procs
from benchmarks.env import BIN
from benchmarks.faults.state import wait_until
from benchmarks.faults.world import APP, SITE, World

SERVICE = "faultmaster"
DOWN_AFTER_MS = 2000

# Enqueues one job after another until told to stop; the time and outcome of every call go to the
# counter Redis (accepted ids, errors, the slowest call).
ENQUEUER = f"""
import sys, time, redis, benchcelery
benchcelery.init(site=sys.argv[1], bench_path=sys.argv[2])
c = redis.Redis.from_url(sys.argv[3])
n = 0
while not c.exists("fo:stop"):
    t0 = time.monotonic()
    try:
        benchcelery.enqueue("{APP}.tasks.run", n=n, ms=5)
    except Exception as exc:
        c.rpush("fo:errors", repr(exc)[:300])
    else:
        c.sadd("fo:accepted", n)
    c.rpush("fo:calls", repr(time.monotonic() - t0))
    n += 1
    time.sleep(0.02)
"""


def _sentinel_conf(path: Path, port: int, master: int) -> Path:
    path.write_text(
        f"port {port}\nsentinel monitor {SERVICE} 127.0.0.1 {master} 2\n"
        f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}\nsentinel failover-timeout {SERVICE} 6000\n"
    )
    return path


def _master(sentinels: list[int]) -> int | None:
    for port in sentinels:
        try:
            addr = redis.Redis(port=port, socket_timeout=1).execute_command(
                "SENTINEL", "get-master-addr-by-name", SERVICE
            )
            return int(addr[1])
        except redis.RedisError:
            continue
    return None


def sc_failover_enqueue(w: World, seconds_after: float) -> dict[str, Any]:
    """Kill the master (and the sentinel beside it) while an enqueuer and a ``worker-pool 2`` run;
    count enqueue calls that raised, the slowest call, and lost / doubled jobs."""
    root = w.workdir / "failover"
    data, sentinels = [free_port(), free_port()], [free_port() for _ in range(3)]
    servers: dict[int, subprocess.Popen[bytes]] = {}
    try:
        servers[data[0]] = start_server(data[0], root / "n1", binary=w.binary)
        servers[data[1]] = start_server(
            data[1], root / "n2", binary=w.binary, args=["--replicaof", "127.0.0.1", str(data[0])]
        )
        for i, port in enumerate(sentinels):
            conf = _sentinel_conf(root / f"s{i}.conf", port, data[0])
            servers[port] = start_server(port, root / f"s{i}", binary=w.binary, config_file=conf, args=["--sentinel"])
        wait_until(lambda: redis.Redis(port=data[1]).info("replication")["master_link_status"] == "up", 20)
        wait_until(
            lambda: int(redis.Redis(port=sentinels[0]).sentinel_master(SERVICE)["num-other-sentinels"]) == 2, 30, 0.2
        )
        url = "sentinel://" + ",".join(f"127.0.0.1:{p}" for p in sentinels) + f"/{SERVICE}/0"
        bench = create_bench(root / "bench", redis_url=url)
        bench.update_config({"bench_id": "fo", "enqueue_wait_replicas": 1, "enqueue_wait_timeout": 1, "job_lease": 10})
        app = bench.root / "apps" / APP
        app.mkdir(parents=True, exist_ok=True)
        for name in ("__init__.py", "hooks.py", "tasks.py"):
            (app / name).write_text((w.bench.root / "apps" / APP / name).read_text())
        add_app(bench, APP)
        bench.new_site(SITE, {})

        counter = f"redis://127.0.0.1:{w.counter_port}/0"
        log = w.workdir / "logs" / "failover-pool.log"
        log.parent.mkdir(exist_ok=True)
        pool = procs.spawn(
            [str(BIN / "bench"), "worker-pool", "--num-workers", "2", "--quiet"], w.env(), bench.root, log
        )
        enqueuer = procs.spawn(
            [sys.executable, "-c", ENQUEUER, SITE, str(bench.root), counter],
            w.env(),
            bench.root,
            w.workdir / "logs" / "fo-enq.log",
        )
        wait_until(lambda: int(w.c.get("count") or 0) >= 100, 60)
        servers[data[0]].kill()
        servers[data[0]].wait(5)
        servers[sentinels[0]].kill()
        servers[sentinels[0]].wait(5)
        killed = time.monotonic()
        calls_at_kill = w.c.llen("fo:calls")
        promoted = wait_until(lambda: _master(sentinels[1:]) == data[1], 30, 0.1)
        wait_until(lambda: time.monotonic() - killed > seconds_after, seconds_after + 1, 0.2)
        w.c.set("fo:stop", 1)
        enqueuer.wait(30)
        accepted = {int(x) for x in w.c.smembers("fo:accepted")}
        settled = wait_until(lambda: accepted <= {int(x) for x in w.c.smembers("ran")}, 90, 0.2)
        runs = {int(k): int(v) for k, v in w.c.hgetall("runs").items()}
        calls = [float(x) for x in w.c.lrange("fo:calls", calls_at_kill, -1)]
        out = {
            "jobs": len(accepted),
            "lost": len(accepted - set(runs)),
            "ran_twice": sum(1 for n in accepted if runs.get(n, 0) >= 2),
            "recorded": 0,
            "enqueue_errors": w.c.llen("fo:errors"),
            "enqueue_error_samples": w.c.lrange("fo:errors", 0, 2),
            "slowest_enqueue_s": max(calls, default=None),
            "promoted_s": promoted,
            "settled": settled is not None,
            "worker_exits": [] if pool.poll() is None else [f"pool exited with {pool.returncode}"],
        }
        procs.stop(pool, 30)
        return out
    finally:
        for proc in servers.values():
            if proc.poll() is None:
                stop_server(proc, timeout=3)
