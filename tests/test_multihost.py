"""Workers on several hosts: the bench's `sites/` and apps copied to another directory (what a
worker host needs), workers presenting different host names, one Redis. Names, heartbeats,
`doctor`, `jobs` and the worker-host supervisor file must stay right."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import redis

from tests.conftest import TESTS, BenchHandle, RedisServer, wait_until


def worker_host_copy(bench: BenchHandle, path: Path) -> BenchHandle:
    """A worker host: only `sites/` (common config, apps.txt, each site's config) and the apps."""
    path.mkdir(parents=True)
    shutil.copytree(bench.root / "sites", path / "sites")
    shutil.copytree(bench.root / "apps", path / "apps")
    (path / "logs").mkdir()  # for the process manager's log files
    from benchcelery.bench.layout import Bench

    return BenchHandle(Bench(path), bench.redis, bench.url)


def test_workers_on_two_hosts(bench: BenchHandle, tmp_path: Path, redis_server: RedisServer) -> None:
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(TESTS / "apps" / "haapp", bench.root / "apps" / "haapp", ignore=ignore)
    (bench.root / "sites" / "apps.txt").write_text("testapp\nhaapp\n")
    bench.set_config(tally_redis=f"{redis_server.url}/4")
    tally = redis.Redis(port=redis_server.port, db=4)
    tally.flushdb()
    other = worker_host_copy(bench, tmp_path / "elsewhere" / "bench-copy")
    other.set_config(worker_hostname="host-b")  # the config key; host A uses the environment variable

    a = bench.start("worker-pool", "--num-workers", "2", env=bench.env(BENCH_HOSTNAME="host-a"))
    b = other.start("worker-pool", "--num-workers", "2")
    bench.procs.append(b)  # stopped at teardown with the others
    rt = bench.rt()
    wait_until(lambda: len(bench.redis.zrange(rt.keys.workers, 0, -1)) == 2, 30, what="two worker heartbeats")

    import benchcelery

    benchcelery.enqueue_many(
        [{"method": "haapp.tasks.count", "queue": "short", "n": i, "seconds": 0.05} for i in range(60)]
    )
    for i in range(4):
        benchcelery.enqueue("testapp.tasks.fail", queue="default", message=f"boom {i}")
    wait_until(lambda: tally.scard("ha:ran:ids") == 60, 60, what="60 jobs ran")
    assert {h.decode() for h in tally.smembers("ha:hosts")} == {"host-a", "host-b"}  # both hosts took jobs

    # doctor and the jobs commands, from either host, see both workers by name and host.
    for where in (bench, other):
        report = json.loads(where.run("--site", "all", "doctor", "-f", "json").stdout)
        workers = {w["name"].rpartition("@")[2]: w for w in report["workers"]}
        assert set(workers) == {"host-a", "host-b"} and all(w["alive"] for w in workers.values())
        assert {w["host"] for w in workers.values()} == {"host-a", "host-b"}
        assert report["sites"][0]["workers"]["short"] == 4  # 2 + 2 processes serve the queue
    names = {w["name"] for w in workers.values()}
    wait_until(lambda: other.run("--site", "site1.local", "jobs", "list", "-f", "json").stdout.count("boom") >= 4, 30)
    failed = json.loads(other.run("--site", "site1.local", "jobs", "list", "-f", "json").stdout)
    assert len(failed) == 4 and {j["extra"]["worker"] for j in failed} <= names

    # A worker host's process file: its workers only (the scheduler and Redis stay on the main host).
    conf = other.run("setup", "supervisor", "--workers-only", "--dry-run")
    assert conf.returncode == 0, conf.stderr
    assert "[program:bench-copy-short-worker]" in conf.stdout and "worker --queue short" in conf.stdout
    assert "bench schedule" not in conf.stdout and "[program:bench-copy-redis" not in conf.stdout
    units = other.run("setup", "systemd", "--workers-only", "--dry-run")
    assert units.returncode == 0, units.stderr
    assert "-short-worker@.service ----" in units.stdout and "schedule.service ----" not in units.stdout
    assert "redis-queue.service" not in units.stdout

    for proc in (a, b):
        proc.terminate()
    wait_until(lambda: a.poll() is not None and b.poll() is not None, 30, what="warm shutdown")
    assert not bench.redis.zrange(rt.keys.workers, 0, -1)  # both removed their heartbeat
