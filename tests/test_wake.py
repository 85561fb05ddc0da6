"""A job enqueued one at a time (``enqueue`` / ``bench enqueue``, Celery's publish path) leaves its
wake token where idle workers block, so an idle worker starts it at once, not at its next poll."""

from __future__ import annotations

from tests.conftest import BenchHandle


def test_enqueue_wakes_idle_workers_on_their_wake_list(bench: BenchHandle) -> None:
    rt = bench.rt()
    bench.enqueue("testapp.tasks.noop")
    bench.enqueue("testapp.tasks.noop")
    assert bench.redis.llen(rt.keys.wake("default")) == 2
    doubled = bench.redis.keys(f"{rt.keys.prefix}{rt.keys.prefix}*")
    assert doubled == []
