"""Job lifecycle against real workers and Redis: retries with backoff, jobs that run later, queue pause.

Delayed jobs and retries live in Redis (broker/delayed.py), are moved by live workers, survive a
worker's SIGKILL and a Redis restart with AOF, and are moved exactly once by racing movers.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from typing import Any

import redis

import benchcelery
from benchcelery.broker.delayed import LATER, Delayed, Entry
from benchcelery.jobs import pause, registry, scheduled
from benchcelery.store.server import free_port, start_server, stop_server
from tests.conftest import BenchHandle, wait_until

FLAKY = "testapp.tasks.flaky"


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


def runs(bench: BenchHandle, key: str) -> list[float]:
    return [float(v) for v in bench.results(key)]


def failed_record(bench: BenchHandle, queue: str = "default") -> dict[str, Any]:
    rt = bench.rt()
    raw = bench.redis.hvals(rt.keys.failed_data(queue))
    assert len(raw) == 1, raw
    return dict(json.loads(raw[0]))


def test_retry_with_backoff_runs_n_times_then_the_failed_record_shows_every_attempt(bench: BenchHandle) -> None:
    bench.rt()
    job = benchcelery.enqueue(FLAKY, key="f", fails=99, retry=benchcelery.Retry(max=2, interval=[1, 2]))
    bench.start("worker", "--queue", "default")
    wait_until(lambda: bench.redis.hlen(f"{bench.prefix}failed:default:data"), timeout=30, what="the failure")
    times = runs(bench, "f")
    assert len(times) == 3  # the first run and two retries
    assert times[1] - times[0] >= 1 - 0.05 and times[2] - times[1] >= 2 - 0.05  # never early
    rec = failed_record(bench)
    assert rec["job_id"] == job.id
    assert [a["exception"] for a in rec["attempts"]] == [f"ValueError: attempt {n} failed" for n in (1, 2, 3)]
    assert not bench.redis.zcard(bench.rt().keys.delayed)


def test_a_retry_keeps_the_job_id_and_shows_retrying_then_succeeds(bench: BenchHandle) -> None:
    bench.rt()
    benchcelery.enqueue(FLAKY, key="k", fails=1, job_id="same", deduplicate=True, retry=benchcelery.Retry(1, 2))
    bench.start("worker", "--queue", "default")
    wait_until(lambda: benchcelery.get_job_status("same") == registry.RETRYING, timeout=30, what="retrying")
    assert benchcelery.enqueue(FLAKY, key="k", fails=1, job_id="same", deduplicate=True) is None
    (row,) = scheduled.delayed_jobs(bench.rt(), "retrying")
    assert row.job_id.endswith("::same") and len(row.attempts) == 1
    wait_until(lambda: bench.results("k:done"), timeout=30, what="the second attempt")
    assert len(runs(bench, "k")) == 2


def test_retry_job_from_inside_and_refused_jobs_are_never_retried(bench: BenchHandle) -> None:
    bench.rt()
    benchcelery.enqueue(FLAKY, key="r", fails=2, error="RetryJob")  # no policy: a job may ask
    bench.set_config(workers={"default": {"retry": 5}})
    bench.redis.lpush(f"{bench.prefix}default\x06\x163", _message_for_unknown_site(bench))
    bench.start("worker", "--queue", "default")
    wait_until(lambda: bench.results("r:done"), timeout=30, what="the job that asked for retries")
    assert len(runs(bench, "r")) == 3
    wait_until(lambda: bench.redis.hlen(f"{bench.prefix}failed:default:data"), what="the refused job recorded")
    assert not bench.redis.zcard(bench.rt().keys.delayed)  # the refused one was not retried


def _message_for_unknown_site(bench: BenchHandle) -> str:
    from benchcelery.jobs.bulk import envelope

    options = {
        "kwargs": {}, "task_id": "nosuch.local::x", "queue": "default", "routing_key": "default", "priority": 3,
        "headers": {"site": "nosuch.local", "method": "testapp.tasks.noop"}, "shadow": "testapp.tasks.noop",
        "soft_time_limit": 60, "time_limit": 90,
    }  # fmt: skip
    return envelope(options, "benchcelery.execute_job", "gen@t", "r")


def test_per_queue_default_and_dont_retry_on(bench: BenchHandle) -> None:
    bench.set_config(workers={"default": {"retry": {"max": 3, "interval": 0, "dont_retry_on": ["KeyError"]}}})
    bench.rt()
    benchcelery.enqueue(FLAKY, key="d", fails=1)
    benchcelery.enqueue(FLAKY, key="n", fails=1, error="KeyError")
    bench.start("worker", "--queue", "default")
    wait_until(lambda: bench.results("d:done"), timeout=30, what="the retried job")
    wait_until(lambda: bench.redis.hlen(f"{bench.prefix}failed:default:data"), what="the KeyError recorded")
    assert len(runs(bench, "n")) == 1


def test_enqueue_in_runs_no_earlier_than_due_and_within_a_second_after(bench: BenchHandle) -> None:
    bench.rt()
    bench.start("worker", "--queue", "default")
    wait_until(lambda: bench.redis.zcard(bench.rt().keys.workers), what="the worker up")
    time.sleep(0.5)  # the worker's mover subscribed (it moves at start, then listens)
    enqueued = time.time()
    job = benchcelery.enqueue_in(2, "testapp.tasks.record", key="later", value="x")
    assert job is not None and job.state == registry.SCHEDULED
    assert scheduled.counts(bench.rt(), ["default"])["default"] == {"site1.local": 1}
    wait_until(lambda: bench.results("later"), timeout=20, what="the delayed job")
    ran = bench.redis.lrange("test:later", 0, -1)
    assert ran
    started = time.time()
    assert started - enqueued >= 2 - 0.05
    assert started - enqueued < 2 + 1.5  # moved within ~1 s of its due time (+ the job's start)
    assert scheduled.counts(bench.rt(), ["default"])["default"] == {}


def test_a_delayed_job_survives_a_worker_sigkill_and_a_redis_restart(bench: BenchHandle, tmp_path: Any) -> None:
    port = free_port()
    server = start_server(port, tmp_path, args=["--appendonly", "yes", "--appendfsync", "always"])
    try:
        bench.set_config(redis_queue=f"redis://127.0.0.1:{port}")
        mine = redis.Redis(port=port)
        bench.rt()
        first = bench.start("worker", "--queue", "default")
        benchcelery.enqueue_in(4, "testapp.tasks.tally", run_id="later")
        kill_group(first)
        server.kill()
        server.wait(10)
        server = start_server(port, tmp_path, args=["--appendonly", "yes", "--appendfsync", "always"])
        assert mine.zcard(bench.rt().keys.delayed) == 1
        bench.start("worker", "--queue", "default")
        wait_until(lambda: mine.sismember("test:tally", "later"), timeout=30, what="the delayed job")
        assert int(mine.get("test:tally:later") or 0) == 1
    finally:
        stop_server(server)


def test_three_movers_racing_move_each_job_exactly_once(bench: BenchHandle) -> None:
    rt = bench.rt()
    total = 3000
    delayed = Delayed(bench.redis, rt.keys)
    due = float(bench.redis.time()[0]) + 1
    pipe_entries = [
        Entry(f"e{i}", rt.keys.queue_list("default", 3), "default", "site1.local", f"site1.local::j{i}", LATER, f"m{i}")
        for i in range(total)
    ]
    for entry in pipe_entries:
        delayed.delay(entry, at=due)
    moved: list[int] = []
    start = threading.Barrier(3)

    def mover() -> None:
        mine = Delayed(redis.Redis(port=bench.port), rt.keys)
        start.wait()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and bench.redis.zcard(rt.keys.delayed):
            moved.append(mine.promote().moved)

    threads = [threading.Thread(target=mover) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # entries naming kombu's one-list layout (as an earlier version wrote them) land in the site's list
    items = bench.redis.lrange(rt.keys.site_list("default", "site1.local", 3), 0, -1)
    assert not bench.redis.llen(rt.keys.queue_list("default", 3))
    assert bench.redis.zscore(rt.keys.sites("default"), "site1.local") is not None  # its turn comes
    assert sum(moved) == total
    assert sorted(items) == sorted(f"m{i}".encode() for i in range(total))  # each once, none lost
    assert int(bench.redis.hget(rt.keys.pending_counts("default"), "site1.local")) == total
    assert not bench.redis.hgetall(rt.keys.scheduled_counts("default")) or scheduled.counts(rt, ["default"]) == {
        "default": {}
    }


def test_queue_pause_holds_jobs_and_resume_runs_them(bench: BenchHandle) -> None:
    rt = bench.rt()
    bench.start("worker", "--queue", "default")
    benchcelery.enqueue("testapp.tasks.record", key="before", value=1)
    wait_until(lambda: bench.results("before"), what="a job before the pause")
    assert pause.pause(rt, "default")
    for i in range(3):
        benchcelery.enqueue("testapp.tasks.record", key="held", value=i)
    time.sleep(2)  # what must not happen: the worker takes a job of the paused queue
    assert not bench.results("held")
    (row,) = [s for s in pause.status(rt) if s["queue"] == "default"]
    assert row["paused"] and row["pending"] == 3
    assert pause.resume(rt, "default")
    wait_until(lambda: len(bench.results("held")) == 3, timeout=5, what="the held jobs after resume")


def test_a_worker_killed_right_after_failing_a_job_still_gets_it_retried(bench: BenchHandle) -> None:
    rt = bench.rt()
    benchcelery.enqueue(FLAKY, key="w", fails=1, retry=benchcelery.Retry(max=2, interval=3))
    first = bench.start("worker", "--queue", "default")
    wait_until(lambda: bench.redis.zcard(rt.keys.delayed), timeout=30, what="the retry scheduled")
    kill_group(first)  # the retry is in Redis already: scheduled in the same step as the ack
    assert not bench.redis.hlen(rt.keys.inflight)
    bench.start("worker", "--queue", "default")
    wait_until(lambda: bench.results("w:done"), timeout=30, what="the retry on another worker")
    assert len(runs(bench, "w")) == 2


def test_the_commands_show_and_act_on_scheduled_jobs_and_paused_queues(bench: BenchHandle) -> None:
    s1 = ("--site", "site1.local")
    out = bench.run(*s1, "enqueue", "testapp.tasks.record", "--in", "10m", "--kwargs", '{"key": "c"}')
    assert out.returncode == 0, out.stderr
    job_id = out.stdout.strip()
    assert bench.run(*s1, "enqueue", "testapp.tasks.record", "--at", "2999-01-01T00:00:00+00:00").returncode == 0
    listed = bench.run(*s1, "jobs", "list", "--state", "scheduled")
    assert job_id in listed.stdout and "scheduled" in listed.stdout, listed.stdout
    pending = bench.run(*s1, "show-pending-jobs", "--format", "json")
    (default,) = [q for q in json.loads(pending.stdout)["queues"] if q["name"] == "default"]
    assert default["scheduled"] == 2 and default["paused"] is False
    assert bench.run("queue", "pause", "default").stdout.strip() == "Paused queue default"
    assert "default (paused)" in bench.run(*s1, "show-pending-jobs").stdout
    assert "paused" in bench.run("queue", "status").stdout
    assert "default (paused)" in bench.run("doctor", "--no-db").stdout
    assert bench.run(*s1, "jobs", "run-now", job_id).returncode == 0
    assert bench.run("queue", "resume", "default").returncode == 0
    bench.start("worker", "--queue", "default")
    wait_until(lambda: bench.results("c"), timeout=20, what="the job run now")
    purge = bench.run(*s1, "purge-jobs")
    assert "Kept 1 scheduled job" in purge.stdout, purge.stdout
    purge = bench.run(*s1, "purge-jobs", "--scheduled")
    assert "1 scheduled" in purge.stdout, purge.stdout
    assert not bench.redis.zcard(bench.rt().keys.delayed)


def test_giving_up_on_a_retrying_job_records_it_failed_with_its_attempts(bench: BenchHandle) -> None:
    bench.rt()
    job = benchcelery.enqueue(FLAKY, key="g", fails=99, retry=benchcelery.Retry(max=3, interval=600))
    bench.start("worker", "--queue", "default")
    wait_until(lambda: scheduled.delayed_jobs(bench.rt(), "retrying"), timeout=30, what="retrying")
    listed = bench.run("--site", "site1.local", "jobs", "list", "--state", "retrying")
    assert job.id in listed.stdout and "attempt 1" in listed.stdout, listed.stdout
    out = bench.run("--site", "site1.local", "jobs", "give-up", job.short_id)
    assert out.returncode == 0 and "Gave up" in out.stdout, out.stderr
    rec = failed_record(bench)
    assert [a["exception"].split(":")[0] for a in rec["attempts"]] == ["ValueError", "GaveUp"]
    assert len(runs(bench, "g")) == 1


def test_bench_schedule_moves_due_jobs_when_no_worker_runs(bench: BenchHandle) -> None:
    rt = bench.rt()
    bench.start("schedule")
    benchcelery.enqueue_in(1, "testapp.tasks.record", key="sched", value=1)
    wait_until(lambda: not bench.redis.zcard(rt.keys.delayed), timeout=30, what="the job moved by bench schedule")
    assert bench.redis.hget(rt.keys.pending_counts("default"), "site1.local") == b"1"
    assert bench.redis.llen(rt.keys.site_list("default", "site1.local", 3)) == 1
    assert bench.redis.zscore(rt.keys.sites("default"), "site1.local") is not None
