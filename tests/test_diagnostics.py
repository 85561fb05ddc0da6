"""show-pending-jobs, doctor, purge-jobs and the jobs family, through the real `bench` command."""

from __future__ import annotations

import json

import pytest

from benchcelery.broker.delivery import Delivery
from benchcelery.jobs import inspect
from benchcelery.store.server import free_port, is_listening
from tests.conftest import BenchHandle, wait_until

S1, S2 = ("--site", "site1.local"), ("--site", "site2.local")


def counts(bench: BenchHandle, *site: str) -> dict[str, dict[str, int]]:
    result = bench.run(*site, "show-pending-jobs", "--format", "json")
    assert result.returncode == 0, result.stderr
    return {q["name"]: q for q in json.loads(result.stdout)["queues"]}


def disable_schedulers(bench: BenchHandle) -> None:
    for site in ("site1.local", "site2.local"):
        bench.set_config(site=site, enable_scheduler=0)


def test_show_pending_jobs_exact_counts_per_site(bench: BenchHandle) -> None:
    for _ in range(5):
        bench.enqueue("testapp.tasks.noop", queue="short")
    for _ in range(2):
        bench.enqueue("testapp.tasks.noop", queue="long", site="site2.local")
    bench.enqueue("testapp.tasks.fail", queue="default")
    bench.enqueue("testapp.tasks.wait_for_flag", queue="default", key="running", flag="go")
    # drain the failing job and start the waiting one; a short job is left queued behind them
    worker = bench.start("worker", "--queue", "default")
    bench.wait_results("running", 1)
    rt = bench.rt()
    wait_until(lambda: bench.redis.zcard(rt.keys.failed("default")), what="failure recorded")
    bench.enqueue("testapp.tasks.noop", queue="default", site="site2.local")

    result = bench.run(*S1, "show-pending-jobs")
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        "Queue: short\n  - pending: 5\n  - failed: 0\n  - started: 0\n\n"
        "Queue: default\n  - pending: 0\n  - failed: 1\n  - started: 1\n\n"
        "Queue: long\n  - pending: 0\n  - failed: 0\n  - started: 0\n\n"
        "Total pending: 5\nTotal failed: 1\nTotal processing: 1\n"
    )
    # The worker takes site2's job ahead of its running one, and gives it back 0.25 s later
    # (worker/lookahead.py): it counts as started until then.
    two = wait_until(lambda: (c := counts(bench, *S2))["default"]["pending"] == 1 and c, what="held job back")
    assert (two["default"]["pending"], two["long"]["pending"], two["short"]["pending"]) == (1, 2, 0)
    assert two["default"]["started"] == two["default"]["failed"] == 0
    whole = json.loads(bench.run("--site", "all", "show-pending-jobs", "-f", "json").stdout)
    assert whole["total"] == {"pending": 8, "failed": 1, "processing": 1}

    verbose = json.loads(bench.run(*S2, "show-pending-jobs", "--verbose", "-f", "json").stdout)
    assert [(j["queue"], j["method"]) for j in verbose["jobs"]] == [
        ("default", "testapp.tasks.noop"),
        ("long", "testapp.tasks.noop"),
        ("long", "testapp.tasks.noop"),
    ]
    assert all(j["id"].startswith("site2.local::") and j["age"] >= 0 for j in verbose["jobs"])
    text = bench.run(*S2, "show-pending-jobs", "--verbose").stdout
    assert "#0 site2.local::" in text
    bench.redis.set("test:go", 1)
    worker.terminate()
    assert worker.wait(30) == 0


def test_custom_queues_are_listed(bench: BenchHandle) -> None:
    bench.set_config(workers={"reports": {"timeout": 60}})
    bench.enqueue("testapp.tasks.noop", queue="reports")
    assert counts(bench, *S1)["reports"]["pending"] == 1


def test_doctor_healthy_exits_0(bench: BenchHandle) -> None:
    disable_schedulers(bench)
    bench.start("worker")
    rt = bench.rt()
    wait_until(lambda: bench.redis.zcard(rt.keys.workers), what="worker heartbeat")
    bench.enqueue("testapp.tasks.fail")
    wait_until(lambda: bench.redis.zcard(rt.keys.failed("default")), what="failure")
    result = bench.run(*S1, "doctor")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert out.startswith("Site: site1.local\nStatus: active\n\nScheduler: disabled\n")
    assert (
        "  - short queue: 1 worker active\n  - default queue: 1 worker active\n  - long queue: 1 worker active" in out
    )
    assert "Queues:\n  - short: 0 pending\n  - default: 0 pending\n  - long: 0 pending" in out
    assert "Failed jobs: 1\nRedis: connected\nDatabase: not configured" in out
    assert "persistence is off" in out  # the test Redis keeps nothing on disk: a warning, not a problem
    assert out.rstrip().endswith("No problems found.")
    data = json.loads(bench.run(*S1, "doctor", "-f", "json").stdout)
    assert data["healthy"] is True and data["sites"][0]["failed"] == 1
    assert [w["alive"] for w in data["workers"]] == [True]


def test_doctor_flags_pending_jobs_without_worker_and_missing_scheduler(bench: BenchHandle) -> None:
    bench.enqueue("testapp.tasks.noop", queue="long")
    bench.enqueue("testapp.tasks.noop", queue="long")
    result = bench.run("doctor")  # every site
    assert result.returncode == 1
    assert "Site: site1.local" in result.stdout and "Site: site2.local" in result.stdout
    assert "  - long: 2 pending" in result.stdout
    assert "site1.local: 2 jobs pending on queue long but no worker serves it" in result.stdout
    assert "site1.local: the scheduler is enabled but no `bench schedule` is running" in result.stdout
    data = json.loads(bench.run(*S1, "doctor", "-f", "json").stdout)
    assert not data["healthy"] and len(data["problems"]) == 2


def test_doctor_reports_gone_workers_and_stuck_jobs(bench: BenchHandle) -> None:
    disable_schedulers(bench)
    rt = bench.rt()
    # a worker that stopped heartbeating: in the index, its key expired
    bench.redis.zadd(rt.keys.workers, {"ghost@host": 1})
    # a job taken by a worker that died at once: the real fetch script, a lease nobody renews
    job = bench.enqueue("testapp.tasks.noop", queue="short")
    taken = Delivery(bench.redis, rt.keys, lease=3).fetch(["short"], "dead-worker-token")
    assert taken is not None
    wait_until(lambda: inspect.started_jobs(bench.redis, rt.keys)[0].extra["orphaned"], what="lease lapsed")
    result = bench.run(*S1, "doctor")
    assert result.returncode == 1
    assert "Worker gone: ghost@host" in result.stdout
    assert f"job {job.id} (testapp.tasks.noop) was taken" in result.stdout
    assert "by a worker that is gone (its lease lapsed)" in result.stdout
    # any process's recovery sweep puts it back; doctor then counts it as recovered
    assert Delivery(bench.redis, rt.keys).recover() == [taken.tag]
    result = bench.run(*S1, "doctor")
    assert "Recovered jobs (their worker died): 1" in result.stdout and "was taken" not in result.stdout
    assert counts(bench, *S1)["short"]["pending"] == 1


def test_doctor_redis_down_exits_69_with_one_line(bench: BenchHandle) -> None:
    bench.set_config(redis_queue=f"redis://127.0.0.1:{free_port()}")
    result = bench.run(*S1, "doctor")
    assert result.returncode == 69
    assert len(result.stderr.strip().splitlines()) == 1 and "unreachable" in result.stderr
    assert result.stdout == ""


@pytest.mark.skipif(not is_listening(3306), reason="no MariaDB on 127.0.0.1:3306")
def test_doctor_checks_mariadb(bench: BenchHandle) -> None:
    disable_schedulers(bench)
    bench.set_config(site="site1.local", db_type="mariadb", db_name="test", db_user="root", db_password="")
    data = json.loads(bench.run(*S1, "doctor", "-f", "json").stdout)
    assert data["sites"][0]["database"]["status"] == "connected"
    bench.set_config(site="site1.local", db_password="wrong-secret")
    result = bench.run(*S1, "doctor")
    assert result.returncode == 1
    assert "Database: unreachable (" in result.stdout and "Access denied" in result.stdout
    assert "wrong-secret" not in result.stdout


@pytest.mark.skipif(not is_listening(5432), reason="no PostgreSQL on 127.0.0.1:5432")
def test_doctor_checks_postgres(bench: BenchHandle) -> None:
    disable_schedulers(bench)
    bench.set_config(site="site1.local", db_url="postgresql://postgres@127.0.0.1:5432/test")
    data = json.loads(bench.run(*S1, "doctor", "-f", "json").stdout)
    assert data["sites"][0]["database"]["status"] == "connected"
    bench.set_config(site="site1.local", db_url="postgresql://postgres@127.0.0.1:5432/no_such_db")
    result = bench.run(*S1, "doctor")
    assert result.returncode == 1 and "Database: unreachable (" in result.stdout


def test_purge_by_queue_event_and_site(bench: BenchHandle) -> None:
    for site in ("site1.local", "site2.local"):
        for queue in ("short", "default"):
            bench.enqueue("testapp.tasks.noop", queue=queue, site=site)
        bench.enqueue("testapp.tasks.noop", queue="long", site=site, event="daily")
        bench.enqueue("testapp.tasks.noop", queue="long", site=site, event="daily_long")
        bench.enqueue("testapp.tasks.noop", queue="long", site=site, event="hourly")
    bench.enqueue("testapp.tasks.fail", queue="short")
    assert bench.run("worker", "--burst", "--queue", "short").returncode == 0  # one failure, site2's short job ran
    bench.enqueue("testapp.tasks.noop", queue="short", site="site2.local")

    result = bench.run(*S1, "purge-jobs", "--event", "daily")
    assert result.stdout.strip() == "Purged 1 job of site site1.local (1 pending, 0 failed)"
    result = bench.run(*S1, "purge-jobs", "--queue", "short")
    assert result.stdout.strip() == "Purged 1 job of site site1.local (0 pending, 1 failed)"
    assert counts(bench, *S2)["short"]["pending"] == 1  # the other site's job is untouched
    result = bench.run(*S1, "purge-jobs", "--event", "all")
    assert result.stdout.strip() == "Purged 2 jobs of site site1.local (2 pending, 0 failed)"
    one = counts(bench, *S1)
    assert (one["default"]["pending"], one["long"]["pending"]) == (1, 0)
    result = bench.run(*S1, "purge-jobs")
    assert result.stdout.strip() == "Purged 1 job of site site1.local (1 pending, 0 failed)"
    two = counts(bench, *S2)
    assert (two["short"]["pending"], two["default"]["pending"], two["long"]["pending"]) == (1, 1, 3)
    result = bench.run("--site", "all", "purge-jobs")
    assert result.stdout.strip() == "Purged 5 jobs of every site (5 pending, 0 failed)"
    assert bench.run(*S1, "purge-jobs", "--event", "").returncode == 2  # usage errors
    assert bench.run(*S1, "purge-jobs", "--queue", "nope").returncode == 2


def test_purge_while_a_worker_holds_jobs_loses_nothing(bench: BenchHandle) -> None:
    n = 300
    for _ in range(2):  # one per pool process: neither runs a queued job until the test says so
        bench.enqueue("testapp.tasks.wait_for_flag", queue="short", key="running", flag="go")
    for i in range(n):
        bench.enqueue("testapp.tasks.record", queue="short", key="ran", value=i)
        bench.enqueue("testapp.tasks.record", queue="short", site="site2.local", key="ran2", value=i)
    worker = bench.start("worker-pool", "--queue", "short", "--num-workers", "2")
    wait_until(lambda: bench.redis.llen("test:running") == 2, timeout=60, what="both pool processes held")
    # The worker is connected and holds its prefetched jobs, but has run none of the queued ones:
    # the purge takes every site1 job still in the queue, the worker runs the ones it holds.
    result = bench.run(*S1, "purge-jobs", "--queue", "short", "-f", "json")
    assert result.returncode == 0, result.stderr
    purged = json.loads(result.stdout)["pending"]
    assert 0 < purged <= n and bench.redis.llen("test:ran") == 0
    assert counts(bench, *S1)["short"]["pending"] == 0
    bench.redis.set("test:go", 1)
    wait_until(
        lambda: (
            bench.redis.llen("test:ran2") == n
            and bench.redis.llen("test:running") == 4
            and bench.redis.llen("test:ran") + purged >= n
        ),
        timeout=120,
        what="everything else ran",
    )
    ran = [int(v) for v in bench.redis.lrange("test:ran", 0, -1)]
    assert len(ran) == len(set(ran)) and len(ran) + purged == n  # every job: run or purged, once
    assert sorted(int(v) for v in bench.redis.lrange("test:ran2", 0, -1)) == list(range(n))  # site2 untouched
    worker.terminate()
    worker.wait(30)


def test_failed_job_retry_runs_it_again_with_the_same_arguments(bench: BenchHandle) -> None:
    job = bench.enqueue("testapp.tasks.fail_unless_flag", key="retry", flag="fixed", n=42)
    assert bench.run("worker", "--burst").returncode == 0
    listed = bench.run(*S1, "jobs", "list", "--state", "failed")
    assert job.id in listed.stdout and "ValueError: not yet" in listed.stdout
    shown = bench.run(*S1, "jobs", "show", job.short_id)
    assert "state: failed" in shown.stdout and "Traceback" in shown.stdout and '"n": 42' in shown.stdout
    bench.redis.set("test:fixed", 1)
    result = bench.run(*S1, "jobs", "retry", job.short_id)
    assert result.returncode == 0 and result.stdout.strip() == f"Retried {job.id}"
    default = counts(bench, *S1)["default"]
    assert (default["pending"], default["failed"], default["started"]) == (1, 0, 0) and default["oldest_age"] >= 0
    assert bench.run("worker", "--burst").returncode == 0
    assert bench.results("retry") == [42]
    finished = bench.run(*S1, "jobs", "show", job.short_id)  # retried with its id: remembered as finished
    assert finished.returncode == 0 and "state: finished" in finished.stdout


def test_retry_all_and_delete(bench: BenchHandle) -> None:
    for i in range(3):
        bench.enqueue("testapp.tasks.fail", queue="short", message=f"m{i}")
    bench.enqueue("testapp.tasks.fail", queue="short", site="site2.local")
    assert bench.run("worker", "--burst").returncode == 0
    assert bench.run(*S1, "jobs", "retry", "--all").stdout.strip() == "Retried 3 jobs"
    assert counts(bench, *S1)["short"]["pending"] == 3
    assert counts(bench, *S2)["short"]["failed"] == 1
    jobs = json.loads(bench.run(*S1, "jobs", "list", "--state", "queued", "-f", "json").stdout)
    assert len(jobs) == 3
    assert bench.run(*S1, "jobs", "delete", jobs[0]["id"]).returncode == 0
    assert counts(bench, *S1)["short"]["pending"] == 2
    missing = bench.run(*S1, "jobs", "delete", "no-such-job")
    assert missing.returncode == 1 and missing.stderr.strip() == "No job site1.local::no-such-job"


def test_cancel_queued_and_running_jobs(bench: BenchHandle) -> None:
    queued = bench.enqueue("testapp.tasks.record", queue="short", key="cancelled", value="ran")
    result = bench.run(*S1, "jobs", "cancel", queued.short_id)
    assert result.stdout.strip() == f"Job {queued.short_id} removed"
    running = bench.enqueue("testapp.tasks.wait_for_flag", queue="default", key="long", flag="never", limit=120)
    worker = bench.start("worker")
    bench.wait_results("long", 1)
    result = bench.run(*S1, "jobs", "cancel", running.short_id, "--terminate")
    assert result.returncode == 0 and result.stdout.strip() == f"Job {running.short_id} terminated"
    rt = bench.rt()
    wait_until(lambda: not bench.redis.hlen(rt.keys.unacked), what="job gone from unacked")
    record = json.loads(bench.redis.hget(rt.keys.failed_data("default"), running.id))
    assert record["exception"].startswith("JobTerminated")
    bench.enqueue("testapp.tasks.record", queue="short", key="after", value="alive")
    assert bench.wait_results("after", 1) == ["alive"]  # the worker survived
    assert bench.results("cancelled") == [] and len(bench.results("long")) == 1
    worker.terminate()
    worker.wait(30)


def test_ready_for_migration(bench: BenchHandle) -> None:
    assert bench.run(*S1, "ready-for-migration").returncode == 0
    bench.enqueue("testapp.tasks.noop")
    result = bench.run(*S1, "ready-for-migration")
    assert result.returncode == 1
    assert result.stdout.strip() == "NOT READY for migration: site site1.local has pending background jobs"
