"""Defects found by the fault suite (benchmarks/faults/), each with the check a user would make."""

from __future__ import annotations

from pathlib import Path

import redis

from benchcelery.jobs import registry
from benchcelery.store.server import free_port, start_server, stop_server
from tests.conftest import BenchHandle, wait_until


def test_enqueue_wakes_idle_workers_on_their_wake_list(bench: BenchHandle) -> None:
    """A job enqueued one at a time (``enqueue`` / ``bench enqueue``, Celery's publish path) leaves its
    wake token where idle workers block, so an idle worker starts it at once, not at its next poll."""
    rt = bench.rt()
    bench.enqueue("testapp.tasks.noop")
    bench.enqueue("testapp.tasks.noop")
    assert bench.redis.llen(rt.keys.wake("default")) == 2
    doubled = bench.redis.keys(f"{rt.keys.prefix}{rt.keys.prefix}*")
    assert doubled == []


def test_a_job_of_a_site_whose_config_is_not_json_is_recorded(bench: BenchHandle) -> None:
    rt = bench.rt()
    bench.enqueue("testapp.tasks.record", site="site2.local", key="never", value=1)
    bench.bench.site_config_file("site2.local").write_text("{ this is not JSON")
    done = bench.run("worker", "--burst", "--queue", "default")
    assert done.returncode == 0, done.stderr
    records = registry.failed_records(
        bench.redis, rt.keys, "default", registry.failed_ids(bench.redis, rt.keys, "default")
    )
    assert [r["kwargs"] for r in records] == [{"key": "never", "value": 1}]
    assert "site_config.json" in records[0]["exception"]
    assert bench.results("never") == []


def test_after_redis_restarts_a_worker_still_recovers_orphans(bench: BenchHandle, tmp_path: Path) -> None:
    """After a Redis crash the worker reconnects with new channels; its lease thread must keep
    renewing and sweeping (the closed channels it held must not stop it)."""
    from benchcelery.broker.delivery import Delivery

    port = free_port()
    server = start_server(port, tmp_path)
    try:
        bench.set_config(redis_queue=f"redis://127.0.0.1:{port}", job_lease=3)
        mine = redis.Redis(port=port)
        rt = bench.rt()
        worker = bench.start("worker", "--queue", "short")
        bench.enqueue("testapp.tasks.record", queue="short", key="crash", value="before")
        wait_until(lambda: mine.llen("test:crash") == 1, what="a job before the crash")
        server.kill()
        server.wait(10)
        server = start_server(port, tmp_path)
        bench.enqueue("testapp.tasks.record", queue="short", key="crash", value="after")
        wait_until(lambda: mine.llen("test:crash"), timeout=60, what="a job after the restart (Redis starts empty)")
        # a job of another queue, taken by a worker that then died: its lease lapses in 3 s
        bench.enqueue("testapp.tasks.noop", queue="long")
        taken = Delivery(mine, rt.keys, lease=3).fetch(["long"], "a-dead-worker")
        assert taken is not None
        wait_until(lambda: mine.hget(rt.keys.recovered("long"), "site1.local"), timeout=30, what="orphan recovered")
        assert worker.poll() is None, bench.output(worker)
        assert "Exception in thread" not in bench.output(worker)
    finally:
        stop_server(server)
