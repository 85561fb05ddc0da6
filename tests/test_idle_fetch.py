"""An idle worker's poll (issue 28, enqueue -> start): the fetch script waits behind the BRPOP on the
wake lists, and Redis runs it as soon as the BRPOP returns, so a woken worker has its job in the
poll's own round trip; what Redis could not run is fetched again, and a job the fetch took while
the worker closes goes back to its queue."""

from __future__ import annotations

from typing import Any

import pytest
from kombu.transport.redis import Empty

from tests.conftest import BenchHandle, pending_total, wait_until
from tests.test_delivery_cost import _channel, _poll


def _fetches(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The fetches run outside the poll (``Delivery.fetch_result``), as the list they append to."""
    from benchcelery.broker import delivery

    calls: list[str] = []
    fetch_result = delivery.Delivery.fetch_result

    def counted(self: Any, queues: Any, token: str, want: int = 1) -> Any:
        calls.append(token)
        return fetch_result(self, queues, token, want)

    monkeypatch.setattr(delivery.Delivery, "fetch_result", counted)
    return calls


def _in_flight(bench: BenchHandle) -> int:
    return int(bench.redis.hlen(bench.rt().keys.inflight))


def test_a_woken_worker_takes_its_job_in_the_polls_own_round_trip(
    bench: BenchHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    from benchcelery.broker import poll

    writes: list[list[Any]] = []
    packed = poll._packed
    monkeypatch.setattr(poll, "_packed", lambda commands: writes.append(commands) or packed(commands))
    fetches = _fetches(monkeypatch)
    got: list[Any] = []
    conn, channel = _channel(bench, got, ("short", "default"))
    try:
        client = channel.client
        client.connection = client.connection or client.connection_pool.get_connection()
        channel._brpop_start()  # nothing queued: the BRPOP blocks, the fetch waits behind it
        assert [c[0] for c in writes[-1]] == ["BRPOP", "EVALSHA"] and _in_flight(bench) == 0
        bench.enqueue("testapp.tasks.noop")  # its wake token ends the BRPOP; the fetch runs then
        wait_until(lambda: _in_flight(bench) == 1, what="the job taken by the fetch behind the BRPOP")
        channel._brpop_read()
        assert len(got) == 1 and fetches == []  # no second round trip
        assert set(channel.held()) == {got[0].delivery_tag} and pending_total(bench) == 0
    finally:
        conn.release()


def test_a_job_left_without_a_wake_token_is_taken_at_the_brpops_timeout(
    bench: BenchHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Jobs put back without a token (by hand, an older tool) wait one BRPOP timeout at most."""
    bench.enqueue("testapp.tasks.noop")
    bench.redis.delete(bench.rt().keys.wake("default"))
    fetches = _fetches(monkeypatch)
    got: list[Any] = []
    conn, channel = _channel(bench, got, ("default",))
    try:
        client = channel.client
        client.connection = client.connection or client.connection_pool.get_connection()
        channel._brpop_start(0.05)
        channel._brpop_read()
        assert len(got) == 1 and fetches == []
    finally:
        conn.release()


def test_an_idle_fetch_redis_could_not_run_is_sent_again_with_its_script(
    bench: BenchHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis lost its scripts (a restart, a failover, SCRIPT FLUSH): the poll's fetch is refused
    with NoScriptError and the worker fetches again, loading the script."""
    fetches = _fetches(monkeypatch)
    got: list[Any] = []
    conn, channel = _channel(bench, got, ("default",))
    try:
        bench.enqueue("testapp.tasks.noop")
        _poll(channel)  # takes it (the scripts loaded)
        with pytest.raises(Empty):  # and finds nothing more: idle
            _poll(channel)
        bench.enqueue("testapp.tasks.noop")
        bench.redis.script_flush()
        _poll(channel)  # the fetch behind the BRPOP is refused; the one sent again takes the job
        assert len(got) == 2 and len(fetches) == 1 and _in_flight(bench) == 2
        bench.redis.script_flush()
        with pytest.raises(Empty):  # busy: the fetch alone, refused too, sent again: nothing to take
            _poll(channel)
        assert len(fetches) == 2 and _in_flight(bench) == 2 and pending_total(bench) == 0
        assert len(set(fetches)) == 2 and not set(fetches) & {m.delivery_tag for m in got[:1]}  # fresh tokens
    finally:
        conn.release()


def test_a_job_the_idle_fetch_took_as_the_worker_closes_goes_back_to_its_queue(bench: BenchHandle) -> None:
    got: list[Any] = []
    conn, channel = _channel(bench, got, ("default",))
    try:
        client = channel.client
        client.connection = client.connection or client.connection_pool.get_connection()
        channel._brpop_start()
        bench.enqueue("testapp.tasks.noop")
        wait_until(lambda: _in_flight(bench) == 1, what="the job taken by the fetch behind the BRPOP")
        channel.close()  # reads the outstanding poll: the job is not this worker's to run
        assert got == [] and _in_flight(bench) == 0 and pending_total(bench) == 1
    finally:
        conn.release()
