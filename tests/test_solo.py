"""``bench worker --pool solo``: jobs run in the worker's own process, with the same guarantees."""

from __future__ import annotations

import json
import signal

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
