"""``bench worker --pool solo``: jobs run in the worker's own process, with the same guarantees."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from time import monotonic

import pytest
from billiard.exceptions import SoftTimeLimitExceeded
from celery.exceptions import TimeLimitExceeded

from benchcelery.jobs import deadline
from tests.conftest import BenchHandle, burst, pending_total, wait_until

S1 = ("--site", "site1.local")


def _failed(bench: BenchHandle, queue: str) -> list[dict[str, object]]:
    return [json.loads(v) for v in bench.redis.hvals(bench.rt().keys.failed_data(queue))]


def test_solo_runs_jobs_in_the_worker_process(bench: BenchHandle) -> None:
    for site in ("site1.local", "site2.local"):
        bench.enqueue("testapp.tasks.context", site=site, key="ctx")
    worker = bench.start("worker", "--pool", "solo")
    results = bench.wait_results("ctx", 2)
    assert {r["pid"] for r in results} == {worker.pid}  # no pool process: the worker ran them itself
    assert sorted(r["site"] for r in results) == ["site1.local", "site2.local"]
    assert [r["conf_marker"] for r in results if r["site"] == "site1.local"] == ["site1.local"]
    rt = bench.rt()
    name = wait_until(lambda: bench.redis.zrange(rt.keys.workers, 0, -1), what="heartbeat")[0]
    assert bench.redis.hget(rt.keys.worker(name.decode()), "pool") == b"solo"
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0


def test_solo_burst_with_timeouts_and_failures(bench: BenchHandle) -> None:
    bench.set_config(workers={"short": {"timeout": 1}})
    bench.enqueue("testapp.tasks.sleep_then_record", queue="short", key="slow", seconds=10, value="late")
    bench.enqueue("testapp.tasks.sleep_then_record", queue="default", timeout=1, key="slow", seconds=10, value="late")
    bench.enqueue("testapp.tasks.fail", queue="default", message="boom")
    bench.enqueue("testapp.tasks.record", queue="short", key="after_timeout", value="still running")
    burst(bench, "--pool", "solo", timeout=60)
    assert bench.results("after_timeout") == ["still running"]
    assert "late" not in bench.results("slow")
    (short,) = _failed(bench, "short")
    assert short["exception"] == "JobTimeoutException: Job exceeded maximum timeout value (1 seconds)"
    default = sorted(str(r["exception"]) for r in _failed(bench, "default"))
    assert default == ["JobTimeoutException: Job exceeded maximum timeout value (1 seconds)", "ValueError: boom"]
    assert pending_total(bench) == 0
    assert not bench.redis.hlen(bench.rt().keys.unacked)


def test_solo_keeps_the_lease_of_a_job_longer_than_the_lease(bench: BenchHandle) -> None:
    """The event loop does not turn while a job runs in it; the lease thread must keep renewing
    the job all the same, so another worker never takes it over."""
    bench.set_config(job_lease=3)
    bench.enqueue("testapp.tasks.sleep_then_record", key="long", seconds=9, value="done")
    solo = bench.start("worker", "--pool", "solo")
    wait_until(lambda: bench.results("long"), what="the long job started")
    other = bench.start("worker")  # sweeps lapsed leases every few seconds, and would take the job
    results = bench.wait_results("long", 2, timeout=60)
    assert results == [{"start": "done"}, "done"]  # started once, finished once
    rt = bench.rt()
    assert not bench.redis.hgetall(rt.keys.recovered("default"))
    # the job records its result before it returns: its ack follows (with the worker's next poll)
    wait_until(lambda: not bench.redis.hlen(rt.keys.unacked), 10, what="the long job's ack")
    for proc in (solo, other):
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    assert bench.results("long") == results


def test_solo_term_mid_job_loses_nothing(bench: BenchHandle) -> None:
    running = bench.enqueue("testapp.tasks.wait_for_flag", key="mid", flag="go", value="finished")
    worker = bench.start("worker", "--pool", "solo")
    bench.wait_results("mid", 1)
    waiting = bench.enqueue("testapp.tasks.record", key="waiting", value="ran later")
    worker.send_signal(signal.SIGTERM)
    worker.send_signal(signal.SIGTERM)  # a second TERM cannot stop a job running in this thread either
    wait_until(lambda: "finishes first" in bench.output(worker), what="the TERM notice")
    assert worker.poll() is None
    bench.redis.set("test:go", 1)
    assert worker.wait(30) == 0
    assert bench.results("mid")[-1] == "finished"
    assert not _failed(bench, "default")
    rt = bench.rt()
    assert not bench.redis.hlen(rt.keys.unacked)
    assert pending_total(bench) == 1  # the waiting job is still there, for the next worker
    burst(bench, "--pool", "solo")
    assert bench.results("waiting") == ["ran later"]
    assert running.id != waiting.id


def test_solo_refuses_to_terminate_a_job(bench: BenchHandle) -> None:
    job = bench.enqueue("testapp.tasks.wait_for_flag", key="t", flag="go", value="finished")
    worker = bench.start("worker", "--pool", "solo")
    bench.wait_results("t", 1)
    result = bench.run(*S1, "jobs", "cancel", job.short_id, "--terminate")
    assert result.returncode == 1
    assert "--pool solo" in result.stderr and "cannot be terminated" in result.stderr
    bench.redis.set("test:go", 1)
    assert bench.wait_results("t", 2)[-1] == "finished"  # it ran on, and the worker with it
    assert not _failed(bench, "default")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0


def test_solo_refuses_per_child_limits(bench: BenchHandle) -> None:
    for option in ("--max-jobs-per-child", "--max-memory-per-child"):
        result = bench.run("worker", "--pool", "solo", option, "5")
        assert result.returncode == 2
        assert "need --pool prefork" in result.stderr


# --- the alarm of a job run in the worker's own thread (jobs/deadline.py), in this process ---


@pytest.fixture()
def alarms() -> Iterator[None]:
    previous = signal.getsignal(signal.SIGALRM)
    yield
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, previous)


def _run(alarm: deadline.Alarm, seconds: float) -> float:
    """A job busy for ``seconds`` under ``alarm``; returns how long it ran (until its limit raised, if one did)."""
    assert alarm.arm()
    started = monotonic()
    try:
        while monotonic() - started < seconds:
            pass
    finally:
        alarm.disarm()
    return monotonic() - started


def test_alarm_gives_every_job_its_own_limit_after_others_left_the_timer_set(alarms: None) -> None:
    for _ in range(200):  # short jobs: the timer stays set for the first one's limit
        assert _run(deadline.Alarm(0.05, None), 0) < 0.05
    assert _run(deadline.Alarm(0.5, None), 0.2) >= 0.2  # the earlier timer fires inside: not its limit yet
    with pytest.raises(SoftTimeLimitExceeded):
        _run(deadline.Alarm(0.3, None), 5)
    ran = monotonic()
    with pytest.raises(SoftTimeLimitExceeded):
        _run(deadline.Alarm(0.2, None), 5)
    assert 0.19 < monotonic() - ran < 1.0


def test_alarm_raises_the_hard_limit_when_the_job_swallows_the_soft_one(alarms: None) -> None:
    alarm = deadline.Alarm(0.1, 0.3)
    assert alarm.arm()
    started = monotonic()
    with pytest.raises(TimeLimitExceeded):
        try:
            while True:
                try:
                    while True:
                        pass
                except SoftTimeLimitExceeded:
                    assert 0.09 < monotonic() - started < 0.5
        finally:
            alarm.disarm()
    assert 0.29 < monotonic() - started < 1.0


def test_alarm_survives_a_job_that_took_over_sigalrm(alarms: None) -> None:
    assert _run(deadline.Alarm(10, None), 0) < 1  # the worker's handler, a timer set 10 s away
    assert deadline.Alarm(5, None).arm()  # a job that stops the timer and installs its own handler
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, signal.SIG_IGN)
    deadline.Alarm(5, None).disarm()
    started = monotonic()
    with pytest.raises(SoftTimeLimitExceeded):
        _run(deadline.Alarm(0.2, None), 5)
    assert 0.19 < monotonic() - started < 1.0
    assert _run(deadline.Alarm(0.3, None), 0) < 0.3  # a job that ends in time: nothing raised after it
    assert not deadline.Alarm(None, None).arm()  # nor inside the next job, which has no limits
    started = monotonic()
    while monotonic() - started < 0.5:
        pass
