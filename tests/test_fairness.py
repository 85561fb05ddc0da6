"""Sites sharing a queue, against real Redis and real workers: turns, weights, caps, a site's pause,
rate limits, and jobs left in the one-list layout by an earlier version."""

from __future__ import annotations

from typing import Any

from benchcelery.jobs import inspect
from benchcelery.jobs.fairness import parse_rate
from tests.conftest import BenchHandle, burst, wait_until

S1, S2 = "site1.local", "site2.local"
RECORD = "testapp.tasks.record"


def enqueue_many(bench: BenchHandle, site: str, jobs: list[dict[str, Any]]) -> None:
    import benchcelery

    benchcelery.init(site=site, bench_path=str(bench.root))
    benchcelery.enqueue_many(jobs)


def pending(bench: BenchHandle, site: str, queue: str = "default") -> int:
    rt = bench.rt()
    return inspect.count_pending(bench.redis, rt.keys, [queue]).get(queue, {}).get(site, 0)


def test_a_site_behind_a_backlog_gets_the_next_turn(bench: BenchHandle) -> None:
    enqueue_many(bench, S1, [{"method": RECORD, "key": "order", "value": "a"} for _ in range(300)])
    bench.enqueue(RECORD, site=S2, key="order", value="b")
    burst(bench, "--queue", "default")
    order = bench.results("order")
    assert len(order) == 301
    assert order.index("b") <= 1  # the next job after the one running when it came


def test_weights_give_turns_in_proportion(bench: BenchHandle) -> None:
    bench.set_config(site=S1, queue_weight=2)
    enqueue_many(bench, S1, [{"method": RECORD, "key": "order", "value": S1} for _ in range(60)])
    enqueue_many(bench, S2, [{"method": RECORD, "key": "order", "value": S2} for _ in range(60)])
    burst(bench, "--queue", "default")
    first = bench.results("order")[:45]
    assert abs(first.count(S1) - 30) <= 2, first  # 2 turns of site1 for each of site2's


def test_a_cap_holds_across_two_workers(bench: BenchHandle) -> None:
    bench.set_config(site=S1, queue_max_running={"default": 1})
    for n in range(3):
        bench.enqueue("testapp.tasks.wait_for_flag", site=S1, key="capped", flag="go", value=n)
    bench.start("worker", "--queue", "default")
    bench.start("worker", "--queue", "default")
    wait_until(lambda: len(bench.results("capped")) >= 1, 30, what="the first capped job started")
    for n in range(2):  # the other worker is free: it runs site2's jobs, never a second of site1's
        bench.enqueue(RECORD, site=S2, key="free", value=n)
        bench.wait_results("free", n + 1)
    rt = bench.rt()
    assert pending(bench, S1) == 2
    assert int(bench.redis.hget(rt.keys.running("default"), S1) or 0) == 1
    bench.redis.set("test:go", 1)
    wait_until(lambda: len([r for r in bench.results("capped") if isinstance(r, int)]) == 3, 60, what="capped jobs")
    assert not bench.redis.hget(rt.keys.running("default"), S1)  # every finish counted back


def test_pausing_one_site_lets_the_others_run(bench: BenchHandle) -> None:
    result = bench.run("--site", S1, "queue", "pause", "default")
    assert result.returncode == 0, result.stderr
    bench.enqueue(RECORD, site=S1, key="s1", value=1)
    bench.enqueue(RECORD, site=S2, key="s2", value=1)
    bench.start("worker", "--queue", "default")
    bench.wait_results("s2", 1)
    bench.enqueue(RECORD, site=S2, key="s2", value=2)
    bench.wait_results("s2", 2)
    assert pending(bench, S1) == 1 and bench.results("s1") == []
    status = bench.run("queue", "status")
    assert "PAUSED" in status.stdout, status.stdout
    shown = bench.run("--site", S1, "show-pending-jobs")
    assert "paused" in shown.stdout.lower(), shown.stdout
    result = bench.run("--site", S1, "queue", "resume", "default")
    assert result.returncode == 0, result.stderr
    bench.wait_results("s1", 1, timeout=10)


def test_a_rate_limited_job_waits_without_a_worker(bench: BenchHandle) -> None:
    bench.set_config(rate_limits={"testapp.tasks.tally": "1/h"})
    for n in range(3):
        bench.enqueue("testapp.tasks.tally", site=S1, run_id=f"r{n}")
    bench.enqueue(RECORD, site=S1, key="other", value=1)
    bench.start("worker", "--queue", "default")
    bench.wait_results("other", 1)
    bench.enqueue(RECORD, site=S2, key="other", value=2)
    bench.wait_results("other", 2)
    rt = bench.rt()
    wait_until(lambda: bench.redis.scard("test:tally") == 1, 30, what="the one start the limit allows")
    assert pending(bench, S1) == 2  # the other two wait where they were, held by no worker
    assert bench.redis.hlen(rt.keys.unacked) == 0


def test_rate_parsing() -> None:
    assert parse_rate("10/s") == 100.0
    assert parse_rate("30/m") == 2000.0
    assert parse_rate("2/h") == 1_800_000.0


def test_jobs_left_in_the_one_list_layout_all_run(bench: BenchHandle) -> None:
    """Messages in kombu's per-queue lists (as an earlier version left them) are moved to their
    sites' lists by the worker, in order, and every one runs once."""
    enqueue_many(bench, S1, [{"method": RECORD, "key": "old", "value": n} for n in range(50)])
    enqueue_many(bench, S2, [{"method": RECORD, "key": "old", "value": 100 + n} for n in range(50)])
    rt, r = bench.rt(), bench.redis
    legacy = rt.keys.queue_list("default", 3)
    for site in (S1, S2):  # back to the old layout: one list per queue, oldest at the right
        source = rt.keys.site_list("default", site, 3)
        while r.rpoplpush(source, legacy):
            pass
    r.delete(rt.keys.sites("default"))
    assert r.llen(legacy) == 100 and pending(bench, S1) == 50
    burst(bench, "--queue", "default")
    ran = bench.results("old")
    assert sorted(ran) == [*range(50), *range(100, 150)]
    assert [v for v in ran if v < 100] == list(range(50))  # each site's jobs in their order
    assert r.llen(legacy) == 0 and pending(bench, S1) == 0
