"""The Redis work of a busy worker's job (issue 28): the acks ride in the next fetch (one script per
job), the wake tokens stay while jobs are taken, and queues found empty are left out of busy fetches
for a moment without stranding their jobs."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import pytest
from kombu.transport.redis import Empty

import benchcelery
from tests.conftest import BenchHandle, pending_total, wait_until


def _delivery(bench: BenchHandle) -> Any:
    from benchcelery.broker.delivery import Delivery

    return Delivery(bench.redis, bench.rt().keys)


def _fetch_with_acks(delivery: Any, queues: list[str], token: str, acks: list[tuple[str, str]]) -> Any:
    """Send the fetch as the worker's poll does (EVALSHA on a connection of its own)."""
    sha, *rest = delivery.fetch_command(queues, token, acks)
    return delivery.fetched(delivery.r.execute_command("EVALSHA", sha, *rest))


def test_a_fetch_carrying_acks_applies_them_and_reports_each_outcome(bench: BenchHandle) -> None:
    for _ in range(3):
        bench.enqueue("testapp.tasks.noop")
    delivery = _delivery(bench)
    keys = delivery.keys
    first = delivery.fetch(["default"], "token-a")
    second = delivery.fetch(["default"], "token-b")
    assert first and second
    # first: finished by its owner; second: by a worker whose token no longer owns it (stale); and a
    # take Redis never recorded (lost). Then the fetch takes the third job.
    fetched = _fetch_with_acks(
        delivery, ["default"], "token-c", [(first.tag, "token-a"), (second.tag, "not-the-owner"), ("gone", "x")]
    )
    assert fetched.acks == [1, -1, -2]
    assert fetched.taken is not None and fetched.passed == 0
    inflight = {t.decode() for t in bench.redis.hkeys(keys.inflight)}
    assert inflight == {second.tag, fetched.taken.tag}
    assert not bench.redis.zscore(keys.leases, first.tag) and not bench.redis.hexists(keys.unacked, first.tag)
    assert int(bench.redis.get(keys.stale_acks)) == 1 and int(bench.redis.get(keys.lost_acks)) == 1
    # the same acks with nothing left to take: still applied, and reported
    nothing = _fetch_with_acks(delivery, ["default"], "token-d", [(second.tag, "token-b")])
    assert nothing.acks == [1] and nothing.taken is None and nothing.passed == 1


def test_a_lapsed_job_keeps_its_lapses_until_its_ack(bench: BenchHandle) -> None:
    """The inflight record notes a take whose message had lapsed before; its ack forgets the lapses
    (and only such an ack needs to)."""
    bench.enqueue("testapp.tasks.noop")
    delivery = _delivery(bench)
    keys = delivery.keys
    taken = delivery.fetch(["default"], "token-a")
    assert taken is not None and json.loads(bench.redis.hget(keys.inflight, taken.tag))[7] == 0
    bench.redis.zadd(keys.leases, {taken.tag: 1})  # the lease lapsed
    assert delivery.recover() == [taken.tag]
    again = delivery.fetch(["default"], "token-b")
    assert again is not None and again.lapses == 1 and again.tag == "token-b"
    assert json.loads(bench.redis.hget(keys.inflight, again.tag))[7] == 1
    own = json.loads(taken.raw)["properties"]["delivery_tag"]  # the take's tag is its token
    assert bench.redis.hget(keys.redeliveries, own) == b"1"
    assert delivery.ack(again.tag, "token-b") == 1
    assert not bench.redis.exists(keys.redeliveries)



def test_lapses_are_read_for_a_day_after_the_last_one(bench: BenchHandle) -> None:
    """A lapse keeps fetches reading the messages' lapses for a day (lapsed_takes); after that
    recover forgets it, and a leftover count (a purged job's, say) no longer costs every fetch a
    decode of its message."""
    bench.enqueue("testapp.tasks.noop")
    delivery = _delivery(bench)
    keys = delivery.keys
    taken = delivery.fetch(["default"], "token-a")
    assert taken is not None
    bench.redis.zadd(keys.leases, {taken.tag: 1})  # the lease lapsed
    assert delivery.recover() == [taken.tag] and bench.redis.zscore(keys.lapsed_takes, taken.tag)
    again = delivery.fetch(["default"], "token-b")
    assert again is not None and again.lapses == 1
    assert delivery.restore(again.tag, "token-b")  # waits again, its lapse still counted
    bench.redis.zadd(keys.lapsed_takes, {taken.tag: 1})  # ... a day ago
    assert delivery.recover() == [] and not bench.redis.exists(keys.lapsed_takes)
    third = delivery.fetch(["default"], "token-c")
    assert third is not None and third.lapses == 0 and bench.redis.hlen(keys.redeliveries) == 1

def test_a_busy_fetch_reads_no_message_and_no_unused_feature(bench: BenchHandle) -> None:
    """With no paused queue, no rate limit and no lapsed job (one EXISTS finds none), a fetch
    carrying the last job's ack neither decodes the message nor reads the paused set, the rates
    or the lapses: 14 Redis commands per job, run and completion (the script's call counted)."""
    n = 20
    for _ in range(n + 3):  # jobs left over: the last fetch does not find the queue emptied
        bench.enqueue("testapp.tasks.noop")
    delivery = _delivery(bench)
    first = delivery.fetch(["default"], "t-0")
    assert first is not None
    bench.redis.config_resetstat()
    acks = [(first.tag, "t-0")]
    for i in range(1, n + 1):
        fetched = _fetch_with_acks(delivery, ["default"], f"t-{i}", acks)
        assert fetched.acks == [1] and fetched.taken is not None and fetched.taken.tag == f"t-{i}"
        acks = [(fetched.taken.tag, f"t-{i}")]
    stats = {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in bench.redis.info("commandstats").items()}
    stats.pop("info", None)
    stats.pop("config|resetstat", None)
    assert stats["evalsha"] == n and stats["exists"] == n
    assert stats["hmget"] == 2 * n  # the site's policy and the ack's record; not the rates
    assert not {"smembers", "hsetnx", "hget"} & stats.keys()  # no lapses read
    assert sum(stats.values()) == 14 * n, " ".join(f"{k}={v}" for k, v in sorted(stats.items()))


def test_wake_tokens_stay_while_jobs_are_taken(bench: BenchHandle) -> None:
    """An empty queue's wake tokens matter only to a worker about to block: a fetch that takes a job
    leaves them, one that takes nothing clears them."""
    bench.enqueue("testapp.tasks.noop")  # on default (and a wake token there)
    delivery = _delivery(bench)
    keys = delivery.keys
    bench.redis.lpush(keys.wake("short"), "")
    fetched = delivery.fetch_result(["short", "default"], "token-a")
    assert fetched.taken is not None and fetched.taken.queue == "default"
    assert bench.redis.llen(keys.wake("short")) == 1 and fetched.passed == 1
    fetched = delivery.fetch_result(["short", "default"], "token-b")
    assert fetched.taken is None and fetched.passed == 2
    assert bench.redis.llen(keys.wake("short")) == 0 and bench.redis.llen(keys.wake("default")) == 0


def _channel(bench: BenchHandle, got: list[Any], queues: tuple[str, ...]) -> Any:
    conn = bench.rt().app.connection_for_read()
    channel = conn.default_channel
    for q in queues:
        channel.basic_consume(q, False, got.append, f"test-{q}")
    return conn, channel


def _poll(channel: Any) -> None:
    client = channel.client
    if client.connection is None:
        client.connection = client.connection_pool.get_connection()
    channel._brpop_start()
    channel._brpop_read()


def _three_jobs_and_the_polls_writes(bench: BenchHandle, monkeypatch: pytest.MonkeyPatch) -> list[list[Any]]:
    """Three jobs waiting on default; the list each poll's write will be appended to."""
    from benchcelery.broker import poll

    for _ in range(3):
        bench.enqueue("testapp.tasks.noop")
    writes: list[list[Any]] = []
    packed = poll._packed
    monkeypatch.setattr(poll, "_packed", lambda commands: writes.append(commands) or packed(commands))
    return writes


def test_the_ack_rides_in_the_fetch_and_its_outcome_is_reported(
    bench: BenchHandle, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    writes = _three_jobs_and_the_polls_writes(bench, monkeypatch)
    got: list[Any] = []
    conn, channel = _channel(bench, got, ("default",))
    keys = bench.rt().keys
    try:
        _poll(channel)
        first = got.pop().delivery_tag
        channel.basic_ack(first)  # in the event loop: it waits for the next poll
        _poll(channel)
        second = got.pop().delivery_tag
        scripts = [c for c in writes[-1] if c[0] == "EVALSHA"]
        assert len(scripts) == 1 and first in scripts[0]  # one script: the fetch, carrying the ack
        assert not bench.redis.hexists(keys.inflight, first) and set(channel.held()) == {second}
        # the second's lease lapsed and another worker holds it now: its ack is stale, and said so
        meta = json.loads(bench.redis.hget(keys.inflight, second))
        bench.redis.hset(keys.inflight, second, json.dumps(["another|token", *meta[1:]]))
        channel.basic_ack(second)
        with caplog.at_level(logging.ERROR, logger="benchcelery.broker.delivery"):
            _poll(channel)
        assert "after its lease had lapsed" in caplog.text and int(bench.redis.get(keys.stale_acks)) == 1
        assert got and set(channel.held()) == {got[0].delivery_tag}
    finally:
        conn.release()


def test_a_job_finishing_while_a_fetch_is_out_waits_for_the_next_fetch(
    bench: BenchHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job that finishes while the fetch script's reply is still on its way (a short job held
    ahead) is not acknowledged with a script of its own: the next fetch carries it; when the
    queue runs dry it is applied before the worker blocks."""
    from benchcelery.broker import delivery

    writes = _three_jobs_and_the_polls_writes(bench, monkeypatch)
    acks: list[str] = []
    ack = delivery.Delivery.ack
    monkeypatch.setattr(delivery.Delivery, "ack", lambda self, tag, token: acks.append(tag) or ack(self, tag, token))
    got: list[Any] = []
    conn, channel = _channel(bench, got, ("default",))
    keys = bench.rt().keys
    try:
        _poll(channel)
        _poll(channel)  # busy: the second poll is the fetch script
        first, second = (m.delivery_tag for m in got)
        channel._brpop_start()  # a third fetch goes out ...
        channel.basic_ack(first)  # ... and the first job finishes before its reply is read
        assert acks == [] and bench.redis.hexists(keys.inflight, first) and first in channel.held()
        channel._brpop_read()
        assert len(got) == 3
        with pytest.raises(Empty):  # the fourth fetch carries the ack and finds the queue empty
            _poll(channel)
        assert acks == [] and any(first in c for c in writes[-1] if c[0] == "EVALSHA")
        assert not bench.redis.hexists(keys.inflight, first)
        channel.basic_ack(second)
        channel._brpop_start()  # idle from here: the ack is applied before the worker blocks
        assert acks == [second] and not bench.redis.hexists(keys.inflight, second)
        assert [c[0] for c in writes[-1]] == ["BRPOP", "EVALSHA"]  # the fetch waits behind the BRPOP
    finally:
        conn.release()

def test_the_acks_of_a_poll_dropped_unread_go_again_with_the_next_fetch(
    bench: BenchHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kombu drops a poll connection whose reply is overdue (a network that black-holes packets):
    the acks the dropped fetch carried go again with the next fetch, whose reply is read against
    the acks it carries (the fault suite's blackhole scenario ended a worker on the mismatch)."""
    writes = _three_jobs_and_the_polls_writes(bench, monkeypatch)
    got: list[Any] = []
    conn, channel = _channel(bench, got, ("default",))
    keys = bench.rt().keys
    try:
        _poll(channel)
        _poll(channel)  # busy: two jobs taken
        first = got[0].delivery_tag
        channel.basic_ack(first)
        channel._brpop_start()  # the fetch carrying the ack goes out ...
        assert any(first in c for c in writes[-1] if c[0] == "EVALSHA")
        channel.client.connection.disconnect()  # ... and kombu drops its connection, the reply unread
        assert channel._in_poll is None and first in channel.held()
        with pytest.raises(Empty):  # the next fetch carries it again (and finds the queue empty:
            _poll(channel)  # the dropped fetch took the third job, which comes back by its lease)
        assert any(first in c for c in writes[-1] if c[0] == "EVALSHA")
        assert first not in channel.held() and not bench.redis.hexists(keys.inflight, first)
    finally:
        conn.release()


def test_a_busy_channel_skips_an_empty_queue_for_a_moment_and_still_takes_its_job(bench: BenchHandle) -> None:
    from benchcelery.broker.poll import SKIP_EMPTY

    bench.rt()
    # More jobs on default than a busy channel takes in SKIP_EMPTY (400 were taken in 50 ms here).
    benchcelery.enqueue_many([{"method": "testapp.tasks.noop", "queue": "default"} for _ in range(5000)])
    got: list[Any] = []
    conn, channel = _channel(bench, got, ("short", "default"))
    try:
        _poll(channel)  # short found empty
        assert got.pop().delivery_info["routing_key"] == "default"
        started = time.monotonic()
        bench.enqueue("testapp.tasks.noop", queue="short")
        _poll(channel)
        if time.monotonic() - started < SKIP_EMPTY:
            assert channel._fetch_queues == ["default"]  # short is left out of this busy fetch
        while got[-1].delivery_info["routing_key"] != "short":
            assert time.monotonic() - started < 1.0, "the job on the skipped queue was not taken within 1 s"
            _poll(channel)  # (each takes a job of default: the worker stays busy)
        assert pending_total(bench) > 0  # default was still busy
    finally:
        conn.release()


def test_a_worker_busy_on_one_queue_starts_a_job_on_another_within_a_second(bench: BenchHandle) -> None:
    benchcelery.init(site="site1.local", bench_path=str(bench.root))
    benchcelery.enqueue_many(
        [{"method": "testapp.tasks.tally", "queue": "default", "run_id": f"d{i}", "seconds": 0.005} for i in range(600)]
    )
    bench.start("worker", "--queue", "short,default")
    wait_until(lambda: bench.redis.exists("test:tally:d20"), timeout=60, what="the worker busy on default")
    sent = time.monotonic()
    bench.enqueue("testapp.tasks.tally", queue="short", run_id="s")
    wait_until(lambda: bench.redis.exists("test:tally:s"), timeout=10, interval=0.01, what="the job on short")
    assert time.monotonic() - sent < 1.5
    assert not bench.redis.exists("test:tally:d599")  # default was still busy meanwhile


def test_a_taken_jobs_body_is_decoded_once_by_the_transport_for_kombu_and_celery(
    bench: BenchHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    import kombu.message

    from benchcelery.bench.keys import EXECUTE_JOB
    from benchcelery.broker.intake import DECODED
    from benchcelery.jobs.request import JobRequest

    bench.enqueue("testapp.tasks.record", key="k", value={"nested": [1, {"a": "b"}]})
    app = bench.rt().app
    conn = app.connection_for_read()
    try:
        message = conn.default_channel.basic_get("default")

        def no_second_decode(*args: Any, **kwargs: Any) -> Any:
            raise AssertionError("the body was decoded again")

        monkeypatch.setattr(kombu.message, "loads", no_second_decode)
        args, kwargs, _embed = message.payload
        assert args == [] and kwargs["value"] == {"nested": [1, {"a": "b"}]}
        assert DECODED not in message._raw  # the envelope a retry is made from (jobs/retrying.py)
        request = JobRequest(message, app=app, task=app.tasks[EXECUTE_JOB], hostname="w")
        assert request.body is message.payload and request.content_type is None  # the trace takes it as it is
        assert request.kwargs["key"] == "k"
    finally:
        conn.release()
