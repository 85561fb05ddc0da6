"""Scheduled and retrying jobs and paused queues where operators look: the dashboard (real server,
real HTTP; run now, give up and cancel with CSRF and read-only checks) and `bench metrics`."""

from __future__ import annotations

import json

import benchcelery
from benchcelery.jobs import pause, scheduled
from benchcelery.store.server import free_port
from tests.conftest import BenchHandle, wait_until
from tests.test_dashboard import Dashboard, Session, make_token
from tests.test_monitoring import get, samples, worker_name

FLAKY = "testapp.tasks.flaky"
SITE1 = "site1.local"


def delayed_setup(bench: BenchHandle) -> tuple[str, str]:
    """A job scheduled 10 minutes out and a job retrying in 10 minutes (after its first failure);
    the queue ``long`` paused. Returns (scheduled job id, retrying job id)."""
    rt = bench.rt()
    later = benchcelery.enqueue_in(600, "testapp.tasks.record", key="later")
    failing = benchcelery.enqueue(FLAKY, key="r", fails=99, retry=benchcelery.Retry(max=3, interval=600))
    assert later is not None
    bench.start("worker", "--queue", "default")
    wait_until(lambda: scheduled.delayed_jobs(rt, "retrying"), timeout=30, what="the retrying job")
    bench.stop_all()
    assert pause.pause(rt, "long")
    return later.id, failing.id


def test_dashboard_lists_delayed_jobs_and_acts_on_them(bench: BenchHandle) -> None:
    later_id, retry_id = delayed_setup(bench)
    make_token(bench)
    dash = Dashboard(bench)
    session = Session(dash)
    session.login(make_token(bench, "alice"))

    status, body, _ = session.request("/")
    assert status == 200
    assert 'id="total-scheduled">1<' in body and 'id="total-retrying">1<' in body, body
    assert 'class="badge paused"' in body and "bench queue resume long" in body

    status, body, _ = session.request("/delayed")
    assert status == 200 and later_id in body and retry_id in body
    assert 'data-queue="long" data-paused="yes"' in body and 'data-queue="default" data-paused="no"' in body
    assert "1 failed" in body and "attempt 1 failed" in body  # the retrying job's attempt
    body = session.request("/delayed?state=retrying")[1]
    assert retry_id in body and later_id not in body and "Give up" in body
    body = session.request("/delayed?state=scheduled")[1]
    assert later_id in body and retry_id not in body and "Cancel" in body
    assert session.request("/delayed?state=bogus")[0] == 400

    # CSRF and read-only are checked as for every action
    assert session.request("/delayed/run-now", {"id": later_id})[0] == 403
    viewer = Session(dash)
    viewer.login(make_token(bench, "viewer", "--read-only"))
    status, body, _ = viewer.request("/delayed")
    assert status == 200 and later_id in body and "Run now" not in body
    assert viewer.request("/delayed/give-up", {"id": retry_id, "csrf": viewer.csrf("/delayed")})[0] == 403
    assert len(scheduled.delayed_jobs(bench.rt())) == 2  # nothing happened so far

    csrf = session.csrf("/delayed")
    status, _, location = session.request("/delayed/give-up", {"id": retry_id, "csrf": csrf, "next": "/delayed"})
    assert status == 303 and location == "/delayed"
    assert f"Gave up on {retry_id}" in session.request("/delayed")[1]
    record = json.loads(bench.redis.hvals(f"{bench.prefix}failed:default:data")[0])
    assert [a["exception"].split(":")[0] for a in record["attempts"]] == ["ValueError", "GaveUp"]

    status, _, _ = session.request("/delayed/run-now", {"id": later_id, "csrf": csrf, "next": "/delayed"})
    assert status == 303 and f"Queued {later_id}" in session.request("/delayed")[1]
    assert bench.redis.llen(bench.rt().keys.site_list("default", "site1.local", 3)) == 1
    session.request("/delayed/run-now", {"id": later_id, "csrf": csrf, "next": "/delayed"})
    assert "is not scheduled or retrying" in session.request("/delayed")[1]  # an error is a flash message
    wait_until(lambda: f"user=alice action=give-up target={retry_id}" in dash.log(), 10, what="the action log")


def test_dashboard_cancels_a_scheduled_job(bench: BenchHandle) -> None:
    bench.rt()
    job = benchcelery.enqueue_in(600, "testapp.tasks.record", key="c")
    assert job is not None
    make_token(bench)
    session = Session(Dashboard(bench))
    session.login(make_token(bench, "alice"))
    csrf = session.csrf("/delayed")
    status, _, _ = session.request("/delayed/give-up", {"id": job.id, "csrf": csrf, "next": "/delayed"})
    assert status == 303 and f"Cancelled {job.id}" in session.request("/delayed")[1]
    rt = bench.rt()
    assert not bench.redis.zcard(rt.keys.delayed) and not bench.redis.hlen(rt.keys.failed_data("default"))


def test_metrics_export_scheduled_retrying_and_paused(bench: BenchHandle) -> None:
    _, retry_id = delayed_setup(bench)
    benchcelery.enqueue_in(600, "testapp.tasks.record", key="more", queue="long")
    result = bench.run("metrics", "--once")
    assert result.returncode == 0, result.stderr
    m = samples(result.stdout)
    assert m[f'bench_jobs_scheduled{{queue="default",site="{SITE1}"}}'] == 1
    assert m[f'bench_jobs_retrying{{queue="default",site="{SITE1}"}}'] == 1
    assert m[f'bench_jobs_scheduled{{queue="long",site="{SITE1}"}}'] == 1
    assert m[f'bench_jobs_retrying{{queue="long",site="{SITE1}"}}'] == 0
    assert m['bench_queue_paused{queue="long"}'] == 1 and m['bench_queue_paused{queue="default"}'] == 0

    # the counters follow the delayed set: give up on the retry, run the scheduled one now
    rt = bench.rt()
    assert scheduled.cancel(rt, retry_id) is not None
    assert scheduled.by_kind(rt, ["default", "long"]) == {
        "default": {"scheduled": 1, "retrying": 0},
        "long": {"scheduled": 1, "retrying": 0},
    }
    for row in scheduled.delayed_jobs(rt):
        assert scheduled.run_now(rt, row.job_id)
    pause.resume(rt, "long")
    m = samples(bench.run("metrics", "--once").stdout)
    assert m[f'bench_jobs_scheduled{{queue="long",site="{SITE1}"}}'] == 0
    assert m[f'bench_jobs_retrying{{queue="default",site="{SITE1}"}}'] == 0
    assert m['bench_queue_paused{queue="long"}'] == 0


def test_flower_shows_a_retrying_job_as_retry_and_paused_jobs_as_waiting(bench: BenchHandle) -> None:
    """What Flower can show: a failed attempt that will be retried is a RETRY task (Celery's
    task-retried event); jobs of a paused queue count in its queue length. Jobs scheduled to run
    later are in no queue yet, so Flower does not show them (bench metrics and the dashboard do)."""
    auth = "admin:s3cret"
    port = free_port()
    bench.set_config(flower_basic_auth=auth)
    bench.start("worker", "--events", "--queue", "default")
    name = worker_name(bench)
    bench.start("flower", "--port", str(port))
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: get(f"{base}/healthcheck")[0] == 200, timeout=30, what="Flower up")
    online = lambda: json.loads(get(f"{base}/api/workers?status=1", auth)[1] or "{}").get(name)  # noqa: E731
    wait_until(online, timeout=30, what="Flower receiving events")

    rt = bench.rt()
    job = benchcelery.enqueue(FLAKY, key="fl", fails=99, retry=benchcelery.Retry(max=3, interval=600))
    benchcelery.enqueue_in(600, "testapp.tasks.record", key="later")

    def state() -> str:
        tasks = json.loads(get(f"{base}/api/tasks", auth)[1] or "{}")
        return str((tasks.get(job.id) or {}).get("state") or "")

    assert wait_until(lambda: state() == "RETRY" and state(), timeout=30, what="the RETRY state in Flower")
    pause.pause(rt, "default")  # Flower lists the queues live workers consume
    benchcelery.enqueue("testapp.tasks.record", key="held")
    lengths = json.loads(get(f"{base}/api/queues/length", auth)[1])["active_queues"]
    assert {q["name"]: q["messages"] for q in lengths}["default"] == 1  # the paused queue's job, waiting
    assert "testapp.tasks.record" not in get(f"{base}/api/tasks", auth)[1]  # neither the scheduled nor the held one
