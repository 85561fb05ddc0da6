"""Faults of round 3 against a real Redis: out of memory (maxmemory under noeviction), a job held
ahead whose lease lapsed, a job re-taken while its first run goes on, and `bench schedule` across
an empty Redis restart. The fault suite counts the same faults job by job (benchmarks/faults/).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from benchcelery.bench.keys import Keys
from benchcelery.broker.delivery import ACKED, STALE, UNKNOWN, Delivery, Taken, new_token
from benchcelery.jobs import registry
from benchcelery.scheduler.timing import lock_timeout, loop_interval
from benchcelery.store.server import free_port, start_server, stop_server
from tests.conftest import TESTS, BenchHandle, wait_until

OOM = "used memory > 'maxmemory'"


@pytest.fixture
def small_redis(tmp_path: Path) -> Iterator[redis.Redis]:
    """A Redis server of our own (its maxmemory is changed by the test)."""
    port = free_port()
    proc = start_server(port, tmp_path / "oom")
    try:
        yield redis.Redis(port=port)
    finally:
        stop_server(proc)


def fill(r: redis.Redis) -> None:
    """Make Redis out of memory for good: maxmemory well below what it uses (noeviction)."""
    for i in range(200):  # small writes: no big query buffer that Redis frees (and so unfills) later
        r.set(f"ballast:{i}", "x" * 10_000)
    r.config_set("maxmemory-policy", "noeviction")
    r.config_set("maxmemory", int(r.info("memory")["used_memory"]) - 1_000_000)
    with pytest.raises(redis.ResponseError, match="maxmemory"):
        r.set("more", "x")


def push(r: redis.Redis, keys: Keys, tag: str) -> None:
    """A message on site s1's front list, its site in the turns (as enqueue pushes)."""
    message = {"properties": {"delivery_tag": tag}, "headers": {"site": "s1"}, "body": "e30="}
    r.pipeline().lpush(keys.site_lists("default", "s1")[0], json.dumps(message)).zadd(
        keys.sites("default"), {"s1": 0}, nx=True
    ).execute()


def test_out_of_memory_refuses_fetch_and_recovery_whole_and_runs_renew_ack_and_records(
    small_redis: redis.Redis,
) -> None:
    r, keys = small_redis, Keys("oom")
    d = Delivery(r, keys, lease=30)
    for tag in ("a", "b", "c"):
        push(r, keys, tag)
    other = {"properties": {"delivery_tag": "d"}, "headers": {"site": "s2"}, "body": "e30="}
    r.lpush(keys.queue_lists("default")[0], json.dumps(other))  # another tool's push, not yet adopted
    token_a, token_b = new_token("w"), new_token("w")
    a, b = d.fetch(["default"], token_a), d.fetch(["default"], token_b)
    assert a is not None and b is not None
    r.zadd(keys.leases, {b.tag: 0})  # b's worker is gone: its lease lapsed
    fill(r)

    with pytest.raises(redis.ResponseError, match="maxmemory"):
        d.fetch(["default"], new_token("w"))
    with pytest.raises(redis.ResponseError, match="maxmemory"):
        d.recover()
    with pytest.raises(redis.ResponseError, match="maxmemory"):
        d.adopt(["default"])
    # Refused before anything moved: c still waits, b still in flight (back once memory frees), d
    # still in kombu's list (a script cut after its LPOP would have lost it).
    assert r.llen(keys.site_lists("default", "s1")[0]) == 1
    assert r.llen(keys.queue_lists("default")[0]) == 1
    assert r.hlen(keys.inflight) == 2 and r.hexists(keys.unacked, b.tag)

    assert d.renew({a.tag: token_a}) == []  # a live job keeps its lease
    assert d.ack(a.tag, token_a) == ACKED
    record = {"job_id": "s1::x", "exception": "RuntimeError: boom", "kwargs": {}}
    registry.record_failure(r, keys, "default", record, limit=10, ttl=3600)
    assert registry.find_failed(r, keys, ["default"], "s1::x") is not None

    from benchcelery.jobs.execute import _set_status

    r.config_set("maxmemory", 0)
    r.set(keys.job_status("s1::y"), registry.QUEUED)
    fill(r)
    _set_status(r, keys.job_status("s1::y"), registry.STARTED, 60)
    assert registry.get_status(r, keys, "s1::y") == registry.STARTED

    r.config_set("maxmemory", 0)  # memory frees: the lapsed job goes back, the queue drains
    assert d.recover() == [b.tag]
    assert {own_tag(d.fetch(["default"], new_token("w"))) for _ in range(2)} == {"b", "c"}
    assert d.adopt(["default"]) == 1 and own_tag(d.fetch(["default"], new_token("w"))) == "d"


def own_tag(taken: Taken | None) -> str:
    """The delivery tag the message itself carries (a take's own tag is its owner token)."""
    assert taken is not None
    return str(json.loads(taken.raw)["properties"]["delivery_tag"])


def test_a_re_taken_job_gets_a_fresh_tag_and_late_acks_are_counted(small_redis: redis.Redis) -> None:
    r, keys = small_redis, Keys("own")
    d = Delivery(r, keys, lease=30)
    push(r, keys, "m1")
    first_token = new_token("w")
    first = d.fetch(["default"], first_token)
    assert first is not None and first.tag == first_token and own_tag(first) == "m1"
    r.zadd(keys.leases, {first.tag: 0})  # the first run's worker stalls past its lease
    assert d.recover() == [first.tag]
    assert r.hget(keys.redeliveries, "m1") == b"1"  # under the message's own tag, read by recover
    second_token = new_token("w")
    second = d.fetch(["default"], second_token)
    assert second is not None and second.tag == second_token and second.lapses == 1
    # The first run's late finish cannot touch the second run's in-flight record.
    assert d.ack(first.tag, first_token) == STALE
    assert r.hexists(keys.inflight, second.tag) and d.renew({second.tag: second_token}) == []
    assert d.ack(second.tag, second_token) == ACKED
    assert not r.hexists(keys.redeliveries, "m1")  # counted under the message's own tag, gone with it
    assert d.ack(first.tag, first_token) == STALE  # still known as a take put back (a day)
    assert d.ack("never-taken", "x") == UNKNOWN
    assert int(r.get(keys.stale_acks) or 0) == 2 and int(r.get(keys.lost_acks) or 0) == 1


def test_a_held_job_whose_lease_lapsed_is_not_started(bench: BenchHandle) -> None:
    """The transport's check before a job goes to the pool (JobRequest.revoked -> may_start)."""
    bench.set_config(job_lease=3)
    bench.enqueue("testapp.tasks.noop")
    bench.enqueue("testapp.tasks.noop")
    conn = bench.rt().app.connection_for_read()
    channel = conn.default_channel
    try:
        kept, lapsed = channel.delivery.fetch(["default"], "k"), channel.delivery.fetch(["default"], "l")
        assert kept is not None and lapsed is not None
        for taken, token in ((kept, "k"), (lapsed, "l")):
            channel._envelope(taken, token)  # as delivered to Celery: held by this channel
        keys = bench.rt().keys
        bench.redis.zadd(keys.leases, {lapsed.tag: 0})
        assert channel.delivery.recover() == [lapsed.tag]
        assert channel.may_start(kept.tag)  # fresh or re-checked: still ours
        channel._fresh[lapsed.tag] = 0.0  # as after a stall: its lease must be checked
        assert not channel.may_start(lapsed.tag)
        assert lapsed.tag not in channel._tokens and lapsed.tag not in channel.held()
    finally:
        conn.release()


def test_a_renewal_that_finds_a_job_lost_stops_renewing_it(bench: BenchHandle) -> None:
    conn = bench.rt().app.connection_for_read()
    channel = conn.default_channel
    try:
        channel._tokens["t1"] = "tok"
        channel.renewed({"t1": "tok"}, ["t1"], 0.0)
        assert "t1" not in channel.held() and not channel.may_start("t1")
    finally:
        conn.release()


def test_default_scheduler_timing_allows_takeover_within_15_s(bench: BenchHandle) -> None:
    settings = bench.rt().settings
    assert lock_timeout(settings) + loop_interval(settings) <= 15


def _install_tick_app(bench: BenchHandle) -> None:
    target = bench.root / "apps" / "schedapp"
    shutil.copytree(TESTS / "apps" / "schedapp", target, ignore=shutil.ignore_patterns("__pycache__"))
    (target / "hooks.py").write_text("scheduler_events = {'all': ['schedapp.tasks.tick']}\n")
    (bench.root / "sites" / "apps.txt").write_text("testapp\nschedapp\n")
    bench.set_config(scheduler_interval=1, scheduler_tick_interval=1)
    bench.set_config("site2.local", enable_scheduler=0)


def test_the_scheduler_survives_an_empty_redis_restart(bench: BenchHandle, tmp_path: Path) -> None:
    port = free_port()
    server = start_server(port, tmp_path / "empty")  # no persistence: a restart is empty
    try:
        bench.set_config(redis_queue=f"redis://127.0.0.1:{port}")
        _install_tick_app(bench)
        mine = redis.Redis(port=port)
        runs = f"test:sched:{bench.bench.bench_id}"
        beat = bench.start("schedule")
        bench.start("worker")
        wait_until(lambda: mine.llen(runs) >= 1, 60, 0.1, what="a scheduled run before the restart")
        server.kill()
        server.wait(10)
        server = start_server(port, tmp_path / "empty")
        wait_until(lambda: mine.llen(runs) >= 2, 90, 0.2, what="scheduled runs after the empty restart")
        assert beat.poll() is None, bench.output(beat)
        assert "re-acquired the scheduler lock" in bench.output(beat)
        heartbeat = json.loads(mine.get(f"{bench.prefix}scheduler:heartbeat") or b"{}")
        assert heartbeat.get("pid") == beat.pid
        os.killpg(beat.pid, signal.SIGTERM)
        beat.wait(30)
    finally:
        stop_server(server)


def test_doctor_reports_out_of_memory_as_a_finding(bench: BenchHandle, tmp_path: Path) -> None:
    port = free_port()
    server = start_server(port, tmp_path / "doc")
    try:
        bench.set_config(redis_queue=f"redis://127.0.0.1:{port}")
        mine = redis.Redis(port=port)
        bench.start("worker")
        bench.enqueue("testapp.tasks.sleep_then_record", key="long", seconds=30)
        wait_until(lambda: mine.hlen(f"{bench.prefix}inflight"), 30, what="the job taken")
        bench.enqueue("testapp.tasks.noop")
        fill(mine)
        result = bench.run("doctor", "--no-db")
        assert result.returncode == 1, result.stdout + result.stderr
        assert "out of memory" in result.stdout and "Site: site1.local" in result.stdout, result.stdout
    finally:
        stop_server(server)
