"""``@benchcelery.rate_limit`` on an app's job function, against real Redis and real workers: a burst
starts no faster than the limit, per-site limits, config overriding the decorator, and jobs
enqueued by code older than the decorator."""

from __future__ import annotations

from typing import Any

import pytest

from benchcelery.bench.keys import RATE_DECLARED
from benchcelery.errors import ValidationError
from benchcelery.jobs import inspect
from benchcelery.jobs.ratelimit import rate_limit
from tests.conftest import BenchHandle, wait_until

S1, S2 = "site1.local", "site2.local"
LIMITED, HOURLY, PER_SITE = "testapp.tasks.limited", "testapp.tasks.hourly", "testapp.tasks.hourly_per_site"
RECORD = "testapp.tasks.record"


def enqueue_many(bench: BenchHandle, site: str, jobs: list[dict[str, Any]]) -> None:
    import benchcelery

    benchcelery.init(site=site, bench_path=str(bench.root))
    benchcelery.enqueue_many(jobs)


def pending(bench: BenchHandle, site: str) -> int:
    return inspect.count_pending(bench.redis, bench.rt().keys, ["default"]).get("default", {}).get(site, 0)


def declared(bench: BenchHandle, method: str) -> bytes | None:
    value: bytes | None = bench.redis.hget(bench.rt().keys.rates, RATE_DECLARED + method)
    return value


def worker_is_idle_after(bench: BenchHandle, n: int) -> None:
    """Two jobs of another method run after the held ones were looked at: the worker is free, so
    what did not start was held by its limit."""
    for i in range(2):
        bench.enqueue(RECORD, site=S2, key="other", value=i)
        bench.wait_results("other", 2 * n + i + 1)


def test_a_burst_starts_no_faster_than_its_decorator_allows(bench: BenchHandle) -> None:
    enqueue_many(bench, S1, [{"method": LIMITED, "key": "burst", "value": n} for n in range(10)])
    assert declared(bench, LIMITED) == b"200.000"  # written with the jobs, before any worker ran
    bench.start("worker", "--queue", "default")
    bench.start("worker", "--queue", "default")
    runs = bench.wait_results("burst", 10, timeout=60)
    starts = sorted(r["started"] for r in runs)
    # 5/s: 9 intervals of 200 ms (a start may come a tenth early), 1.62 s at the least; unlimited,
    # two workers start ten no-op jobs within a few tens of ms
    assert starts[-1] - starts[0] >= 1.4, starts
    assert sorted(r["value"] for r in runs) == list(range(10))


def test_a_per_site_decorator_limits_each_site_apart(bench: BenchHandle) -> None:
    for site in (S1, S2):
        enqueue_many(bench, site, [{"method": PER_SITE, "key": "each"} for _ in range(2)])
    bench.start("worker", "--queue", "default")
    wait_until(lambda: len(bench.results("each")) >= 2, 30, what="one start per site")
    worker_is_idle_after(bench, 0)
    assert sorted(bench.results("each")) == [S1, S2]
    assert pending(bench, S1) == 1 and pending(bench, S2) == 1


def test_config_overrides_the_decorator(bench: BenchHandle) -> None:
    enqueue_many(bench, S1, [{"method": HOURLY, "key": "hourly", "value": n} for n in range(3)])
    bench.start("worker", "--queue", "default")  # its policy sync at start keeps the declaration
    bench.wait_results("hourly", 1)
    worker_is_idle_after(bench, 0)
    assert len(bench.results("hourly")) == 1 and pending(bench, S1) == 2  # 1/h holds
    bench.set_config(rate_limits={HOURLY: "50/s"})  # the common config wins, once workers sync (10 s)
    bench.wait_results("hourly", 3, timeout=40)
    assert declared(bench, HOURLY) == b"3600000.000"  # still declared, just overridden


def test_a_stricter_config_limit_replaces_the_decorators(bench: BenchHandle) -> None:
    bench.set_config(rate_limits={LIMITED: "1/h"})
    enqueue_many(bench, S1, [{"method": LIMITED, "key": "strict", "value": n} for n in range(3)])
    bench.start("worker", "--queue", "default")
    bench.wait_results("strict", 1)
    worker_is_idle_after(bench, 0)
    assert len(bench.results("strict")) == 1 and pending(bench, S1) == 2


def test_jobs_enqueued_before_the_decorator_are_held_once_a_worker_imports_it(bench: BenchHandle) -> None:
    enqueue_many(bench, S1, [{"method": HOURLY, "key": "old", "value": n} for n in range(6)])
    bench.redis.hdel(bench.rt().keys.rates, RATE_DECLARED + HOURLY)  # as code without the decorator left them
    bench.start("worker", "--queue", "default")
    bench.wait_results("old", 1)
    worker_is_idle_after(bench, 0)
    # The pool process wrote the limit before it ran the first job; the worker may have taken one
    # more ahead meanwhile, and one more start passes before the limit's first start is counted.
    assert declared(bench, HOURLY) == b"3600000.000"
    assert len(bench.results("old")) <= 3 and pending(bench, S1) >= 3


def test_enqueue_of_an_undecorated_method_clears_a_stale_declaration(bench: BenchHandle) -> None:
    rt = bench.rt()
    bench.redis.hset(rt.keys.rates, RATE_DECLARED + RECORD, "s1000.000")  # code that had the decorator
    bench.enqueue(RECORD, site=S1, key="plain", value=1)
    assert declared(bench, RECORD) is None
    bench.start("worker", "--queue", "default")
    bench.wait_results("plain", 1)


def test_the_decorator_marks_the_function_and_checks_the_rate() -> None:
    def job() -> None:
        pass

    assert rate_limit("3/m", per_site=True)(job) is job
    with pytest.raises(ValidationError):
        rate_limit("often")
    with pytest.raises(ValidationError):
        rate_limit("1/s")(print)  # type: ignore[arg-type]


def test_a_config_sync_keeps_declarations_and_drops_what_config_no_longer_says(bench: BenchHandle) -> None:
    from benchcelery.jobs.fairness import sync_policy

    rt = bench.rt()
    bench.enqueue(RECORD, site=S1, key="x")  # imports testapp.tasks here: its decorators ran
    rates = rt.keys.rates
    bench.redis.hset(rates, mapping={"gone.tasks.old": "100.000", RATE_DECLARED + "otherapp.tasks.x": "50.000"})
    bench.set_config(rate_limits={RECORD: "2/s"})
    problems = sync_policy(bench.redis, rt.keys, rt.bench, ["default"])
    assert problems == []
    assert bench.redis.hgetall(rates) == {
        RECORD.encode(): b"500.000",  # the config's
        (RATE_DECLARED + "otherapp.tasks.x").encode(): b"50.000",  # another process's declaration stays
        (RATE_DECLARED + LIMITED).encode(): b"200.000",  # this process's, from its imported module
        (RATE_DECLARED + HOURLY).encode(): b"3600000.000",
        (RATE_DECLARED + PER_SITE).encode(): b"s3600000.000",
    }
