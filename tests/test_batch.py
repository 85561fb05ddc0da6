"""A busy worker's fetch takes a batch of short jobs (issue 28): each job leased and parked as a single
take, sites and round_robin queues still taking turns job by job, a cap still counted, the batch's
acks applied together in the next fetch, and the jobs a solo worker has not started given back."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest

from tests.conftest import BenchHandle, burst
from tests.test_delivery_cost import _channel, _delivery, _poll, _three_jobs_and_the_polls_writes

S1, S2 = "site1.local", "site2.local"


def _fetch(delivery: Any, queues: list[str], token: str, want: int, acks: Any = (), rotate: bool = False) -> Any:
    """A fetch sent as the worker's poll sends it (EVALSHA on a connection of its own)."""
    sha, *rest = delivery.fetch_command(queues, token, acks, want, rotate)
    return delivery.fetched(delivery.r.execute_command("EVALSHA", sha, *rest))


def _value(taken: Any) -> Any:
    """The ``value`` a testapp.tasks.record job was enqueued with."""
    return _body(json.loads(taken.raw))[1]["value"]


def _body(message: dict[str, Any]) -> Any:
    return json.loads(base64.b64decode(message["body"]))


def _calls(bench: BenchHandle) -> dict[str, int]:
    stats = {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in bench.redis.info("commandstats").items()}
    for own in ("info", "config|resetstat", "script|load"):
        stats.pop(own, None)
    return stats


def test_a_batch_takes_a_sites_jobs_in_order_each_parked_and_leased_as_one_take(bench: BenchHandle) -> None:
    for n in range(6):
        bench.enqueue("testapp.tasks.record", key="b", value=n)
    delivery = _delivery(bench)
    keys = delivery.keys
    bench.redis.config_resetstat()
    fetched = _fetch(delivery, ["default"], "w|tok", 4)
    calls = _calls(bench)
    takes = fetched.takes
    assert [_value(t) for t in takes] == [0, 1, 2, 3] and fetched.passed == 0
    assert [t.tag for t in takes] == ["w|tok", "w|tok.2", "w|tok.3", "w|tok.4"]
    for t in takes:  # each owned by its own tag: acks, renewals and restores fenced as for one take
        meta = json.loads(bench.redis.hget(keys.inflight, t.tag))
        assert meta[0] == t.tag and meta[3] == S1 and meta[4] == "default"
        assert bench.redis.hget(keys.unacked, t.tag) == t.raw and bench.redis.zscore(keys.leases, t.tag)
    assert bench.redis.hget(keys.pending_counts("default"), S1) == b"2"
    # the fetch's own: EVALSHA, TIME, EXISTS, ZRANGE, HMGET (policy), LMPOP twice (the first job,
    # then the rest with COUNT), HINCRBY, HSET x2, ZADD: 11 commands for 4 jobs
    assert calls["evalsha"] == 1 and calls["lmpop"] == 2 and sum(calls.values()) == 11, calls
    assert delivery.renew({t.tag: t.tag for t in takes}) == []
    assert delivery.restore("w|tok.4", "w|tok.4") and not delivery.restore("w|tok.3", "w|tok")


def test_a_batchs_acks_ride_together_with_each_outcome(bench: BenchHandle) -> None:
    for n in range(7):
        bench.enqueue("testapp.tasks.record", key="b", value=n)
    delivery = _delivery(bench)
    keys = delivery.keys
    first = _fetch(delivery, ["default"], "a", 4).takes
    second = delivery.fetch(["default"], "b")
    acks = [(t.tag, t.tag) for t in first] + [(second.tag, "not-b"), ("gone", "x"), (first[0].tag, first[0].tag)]
    bench.redis.config_resetstat()
    fetched = _fetch(delivery, ["default"], "c", 1, acks)
    calls = _calls(bench)
    # the four plain ones together; a stale token, an unknown take and a tag carried twice as ack.lua
    assert fetched.acks == [1, 1, 1, 1, -1, -2, -2]
    assert [_value(t) for t in fetched.takes] == [5]
    assert {t.decode() for t in bench.redis.hkeys(keys.inflight)} == {second.tag, "c"}
    assert int(bench.redis.get(keys.stale_acks)) == 1 and int(bench.redis.get(keys.lost_acks)) == 2
    assert calls["zrem"] == 1 and calls["hdel"] == 2  # one ZREM and one HDEL of each hash for the four


def test_sites_and_round_robin_queues_take_turns_within_a_batch(bench: BenchHandle) -> None:
    for n in range(3):
        bench.enqueue("testapp.tasks.record", site=S1, key="s", value=f"{S1}-{n}")
        bench.enqueue("testapp.tasks.record", site=S2, key="s", value=f"{S2}-{n}")
    delivery = _delivery(bench)
    sites = [_value(t).rsplit("-", 1)[0] for t in _fetch(delivery, ["default"], "t1", 4).takes]
    assert sites in ([S1, S2, S1, S2], [S2, S1, S2, S1]), sites
    bench.redis.flushdb()
    for _ in range(3):
        for queue in ("short", "long"):
            bench.enqueue("testapp.tasks.record", queue=queue, key="q", value=queue)
    rotated = _fetch(delivery, ["short", "long"], "t2", 4, rotate=True).takes
    assert [t.queue for t in rotated] == ["short", "long", "short", "long"]
    bench.redis.flushdb()
    for _ in range(3):
        for queue in ("short", "long"):
            bench.enqueue("testapp.tasks.record", queue=queue, key="q", value=queue)
    in_order = _fetch(delivery, ["short", "long"], "t3", 4).takes  # priority: the first queue first
    assert [t.queue for t in in_order] == ["short", "short", "short", "long"]


def test_a_capped_site_gives_a_batch_no_more_than_its_cap(bench: BenchHandle) -> None:
    for n in range(5):
        bench.enqueue("testapp.tasks.record", key="c", value=n)
    delivery = _delivery(bench)
    keys = delivery.keys
    bench.redis.hset(keys.fair("default"), f"c:{S1}", 2)
    takes = _fetch(delivery, ["default"], "t", 4).takes
    assert [_value(t) for t in takes] == [0, 1]
    assert bench.redis.hget(keys.running("default"), S1) == b"2"


def _busy_channel(bench: BenchHandle, got: list[Any], monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any]:
    """A channel of a worker allowed batches, after its first (idle) fetch took one job."""
    from benchcelery.broker import poll

    monkeypatch.setattr(poll.Poll, "batch", 4)
    conn, channel = _channel(bench, got, ("default",))
    _poll(channel)
    assert len(got) == 1
    return conn, channel


def test_a_busy_worker_takes_a_batch_while_its_jobs_are_short_and_one_otherwise(
    bench: BenchHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes = _three_jobs_and_the_polls_writes(bench, monkeypatch)
    for _ in range(5):
        bench.enqueue("testapp.tasks.noop")
    got: list[Any] = []
    conn, channel = _busy_channel(bench, got, monkeypatch)
    try:
        channel.basic_ack(got[0].delivery_tag)
        _poll(channel)  # right after the first: a short job, so a batch
        assert len(got) == 5 and set(channel.held()) == {m.delivery_tag for m in got[1:]}
        for message in got[1:]:
            channel.basic_ack(message.delivery_tag)
        channel._last_fetch = time.monotonic() - 1.0  # four jobs in a second: not short
        _poll(channel)
        assert len(got) == 6
        fetch = next(c for c in writes[-1] if c[0] == "EVALSHA")
        assert all(m.delivery_tag in fetch for m in got[1:5])  # the batch's four acks in one fetch
        assert not bench.redis.hexists(bench.rt().keys.inflight, got[1].delivery_tag)
    finally:
        conn.release()


def test_a_solo_batch_gives_back_what_has_not_started_after_batch_wait(
    bench: BenchHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    from benchcelery.broker import poll

    monkeypatch.setattr(poll, "BATCH_WAIT", 0.05)
    for n in range(6):
        bench.enqueue("testapp.tasks.record", key="g", value=n)
    got: list[Any] = []

    def run_inline(message: Any) -> None:  # as --pool solo runs a job: before the next is handed over
        got.append(message)
        if len(got) == 3:
            time.sleep(0.1)  # the batch's second job runs long
        channel.basic_ack(message.delivery_tag)  # finished: the ack waits for the next fetch

    conn = bench.rt().app.connection_for_read()
    channel = conn.default_channel
    monkeypatch.setattr(poll.Poll, "batch", 4)
    channel.basic_consume("default", False, run_inline, "test-default")
    keys = bench.rt().keys
    try:
        _poll(channel)
        _poll(channel)  # carries the first job's ack: a batch of four
        assert [m.decode()[1]["value"] for m in got] == [0, 1, 2]
        # the batch's last two never started: back at the front of the queue, in their order
        assert bench.redis.hlen(keys.inflight) == 2  # the two that ran, their acks waiting
        assert bench.redis.hget(keys.pending_counts("default"), S1) == b"3"
        assert [_value(t) for t in _fetch(_delivery(bench), ["default"], "x", 3).takes] == [3, 4, 5]
    finally:
        conn.release()


def test_a_closing_channel_gives_back_the_whole_batch(bench: BenchHandle, monkeypatch: pytest.MonkeyPatch) -> None:
    from kombu.transport.redis import Empty

    for n in range(5):
        bench.enqueue("testapp.tasks.record", key="z", value=n)
    got: list[Any] = []
    conn, channel = _busy_channel(bench, got, monkeypatch)
    keys = bench.rt().keys
    try:
        channel.basic_ack(got[0].delivery_tag)
        channel._brpop_start()  # carries the ack: a batch of four
        channel._closing = True
        with pytest.raises(Empty):
            channel._brpop_read()
        assert len(got) == 1 and bench.redis.hlen(keys.inflight) == 0
        assert [_value(t) for t in _fetch(_delivery(bench), ["default"], "x", 4).takes] == [1, 2, 3, 4]
    finally:
        channel._closing = False
        conn.release()


def test_acks_no_fetch_will_carry_are_applied_at_the_second_settle(
    bench: BenchHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Jobs of a batch held behind a long one free no slot for a fetch: the finished ones' acks are
    applied by the lookahead's periodic call (settle_acks) instead of waiting for it."""
    bench.enqueue("testapp.tasks.noop")
    got: list[Any] = []
    conn, channel = _busy_channel(bench, got, monkeypatch)
    keys = bench.rt().keys
    try:
        tag = got[0].delivery_tag
        channel.basic_ack(tag)  # waits for the next poll
        channel.settle_acks()
        assert bench.redis.hexists(keys.inflight, tag)  # not yet: a poll may still carry it
        channel.settle_acks()
        assert not bench.redis.hexists(keys.inflight, tag) and not channel.held()
    finally:
        conn.release()


@pytest.mark.parametrize("pool", ["solo", "prefork"])
def test_a_busy_worker_runs_short_jobs_in_batches(bench: BenchHandle, pool: str) -> None:
    """``bench worker`` on 400 short jobs: every one runs once, with fewer fetches than half the
    jobs (one a job without batches)."""
    n = 400
    for i in range(n):
        bench.enqueue("testapp.tasks.record", key="runs", value=i)
    bench.redis.config_resetstat()
    burst(bench, "--pool", pool)
    calls = _calls(bench)
    assert sorted(bench.results("runs")) == list(range(n))
    assert bench.redis.hlen(bench.rt().keys.inflight) == 0
    assert calls["evalsha"] < n / 2, calls["evalsha"]  # fetches (and the few acks sent on their own)
