"""Defects found by the fault suite (benchmarks/faults.py), each with the check a user would make."""

from __future__ import annotations

from benchcelery.jobs import registry
from tests.conftest import BenchHandle


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
