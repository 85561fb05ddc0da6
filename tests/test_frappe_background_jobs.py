"""Frappe's own ``frappe/tests/test_background_jobs.py`` (the queue part), rewritten against this
bench's ``frappe`` stand-in, plus the rest of the background-job API Frappe code relies on: every
``frappe.enqueue`` parameter, both job id forms, the rq-like job, ``frappe.utils.background_jobs``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from benchcelery.deploy.scaffold import add_app
from benchcelery.errors import ValidationError
from tests.conftest import TESTS, BenchHandle, burst

SITE = "site1.local"


@pytest.fixture
def frappe(bench: BenchHandle) -> Iterator[Any]:
    shutil.copytree(TESTS / "apps" / "frappeapp", bench.root / "apps" / "frappeapp")
    add_app(bench.bench, "frappeapp")
    bench.rt(SITE)
    import frappe as module

    yield module
    for name in [m for m in sys.modules if m == "frappeapp" or m.startswith("frappeapp.")]:
        del sys.modules[name]


# --- Frappe's TestBackgroundJobs, against this API ---


def test_remove_failed_jobs(bench: BenchHandle, frappe: Any) -> None:
    from frappe.utils.background_jobs import generate_qname, get_redis_conn

    from benchcelery.compat.rq import Queue
    from benchcelery.jobs.ops import delete_job

    frappe.enqueue(method="frappeapp.jobs.fail_function", queue="short")
    burst(bench, timeout=120)
    short = [q for q in Queue.all(get_redis_conn()) if q.name == generate_qname("short")]
    assert len(short) == 1 and short[0].failed_job_registry.count > 0
    for job_id in short[0].failed_job_registry.get_job_ids():  # rq_job.remove_failed_jobs()
        delete_job(bench.rt(SITE), SITE, job_id)
    assert short[0].failed_job_registry.count == 0


def test_enqueue_at_front(frappe: Any) -> None:
    kwargs = {"method": "frappeapp.jobs.ping", "queue": "short"}
    frappe.enqueue(**kwargs)  # something to wait behind
    low_priority_job = frappe.enqueue(**kwargs)
    high_priority_job = frappe.enqueue(**kwargs, at_front=True)
    assert high_priority_job.get_position() < low_priority_job.get_position()


def test_job_hooks(bench: BenchHandle, frappe: Any) -> None:
    from frappe.utils.background_jobs import execute_job

    result = execute_job(
        site=SITE,
        user="Administrator",
        method="frappeapp.jobs.ping",
        event=None,
        job_name="frappeapp.jobs.ping",
        is_async=True,
        kwargs={},
    )
    assert result == "pong"
    assert bench.results("hooks") == [["before", "job", "frappeapp.jobs.ping"], ["after", "frappeapp.jobs.ping"]]


# --- deduplication and job ids ---


def test_deduplicate_by_job_id_and_both_id_forms(frappe: Any) -> None:
    from frappe.utils.background_jobs import create_job_id, get_job_status, is_job_enqueued

    job = frappe.enqueue("frappeapp.jobs.ping", job_id="a::b", deduplicate=True)
    assert job.id == create_job_id("a::b") == f"{SITE}::a::b"
    assert frappe.enqueue("frappeapp.jobs.ping", job_id="a::b", deduplicate=True) is None
    for form in ("a::b", f"{SITE}::a::b", f"{SITE}||a::b", f"{SITE}||a||b"):  # develop: `:` -> `|`
        assert get_job_status(form) == "queued", form
    assert is_job_enqueued("a::b")
    assert get_job_status("a") is None
    with pytest.raises(ValidationError, match="job_id"):
        frappe.enqueue("frappeapp.jobs.ping", deduplicate=True)


# --- every enqueue parameter: honoured or refused before anything is written ---


def test_timeouts_zero_none_and_fractions(frappe: Any) -> None:
    from frappe.utils.background_jobs import get_queues_timeout

    default = get_queues_timeout()["long"]
    assert frappe.enqueue("frappeapp.jobs.ping", queue="long", timeout=0).timeout == default
    assert frappe.enqueue("frappeapp.jobs.ping", queue="long", timeout=None).timeout == default
    assert frappe.enqueue("frappeapp.jobs.ping", timeout=600.0).timeout == 600
    assert frappe.enqueue("frappeapp.jobs.ping", timeout=1.5).timeout == 2
    for bad in (-1, "600", True):
        with pytest.raises(ValidationError, match="timeout"):
            frappe.enqueue("frappeapp.jobs.ping", timeout=bad)


def test_enqueue_options_never_reach_the_job(bench: BenchHandle, frappe: Any) -> None:
    key = f"k{uuid.uuid4().hex[:6]}"
    outside = frappe.enqueue(
        "frappeapp.jobs.notify",
        enqueue_after_commit=True,  # outside a job: pushed at once
        at_front_when_starved=True,
        job_name="named",
        key=key,
        text="ok",
    )
    assert outside is not None and outside.get_status() == "queued"
    assert frappe.enqueue("frappeapp.jobs.notify", key=key, text="inline", now=True) is None
    assert frappe.enqueue("frappeapp.jobs.ping", is_async=False) == "pong"
    assert frappe.enqueue("frappeapp.jobs.ping", retry=3) is not None  # honoured (jobs/retry.py), not an argument
    burst(bench, timeout=120)
    assert bench.results(f"{key}-notify") == ["inline", "ok"]
    assert bench.redis.zcard(bench.rt(SITE).keys.failed("default")) == 0


def test_at_front_when_starved(frappe: Any) -> None:
    from benchcelery.jobs.enqueue import QUEUE_STARVATION_THRESHOLD

    first = frappe.enqueue("frappeapp.jobs.ping", queue="short", at_front_when_starved=True)
    assert first.get_position() == 0  # not starved: at the back (of nothing)
    for _ in range(QUEUE_STARVATION_THRESHOLD):
        frappe.enqueue("frappeapp.jobs.ping", queue="short")
    jumped = frappe.enqueue("frappeapp.jobs.ping", queue="short", at_front_when_starved=True)
    assert jumped.get_position() == 0


# --- the returned job behaves like rq's ---


def test_job_like_rq(bench: BenchHandle, frappe: Any) -> None:
    job = frappe.enqueue("frappeapp.jobs.ping", queue="short", job_id="rq-like")
    assert job.is_queued and job.origin == "short" and job.enqueued_at and job.get_position() == 0
    job.meta["progress"] = 10
    job.save_meta()
    assert frappe.utils.background_jobs.get_job("rq-like").meta == {"progress": 10}
    burst(bench, timeout=120)
    assert job.get_status() == "finished" and job.is_finished
    assert job.return_value() == "pong" == job.result
    assert job.ended_at and job.exc_info is None
    waiting = frappe.enqueue("frappeapp.jobs.ping", queue="short")
    assert waiting.cancel() == "removed"
    assert waiting.get_status() is None


# --- frappe.utils.background_jobs answers from the bench ---


def test_background_jobs_module(bench: BenchHandle, frappe: Any) -> None:
    from frappe.utils import background_jobs as bj

    assert bj.get_queue_list() == ["short", "default", "long"]
    assert bj.get_queue_list("short", build_queue_name=True) == [bj.generate_qname("short")]
    with pytest.raises(ValidationError, match="Queue should be one of short, default, long"):
        bj.validate_queue("nope")
    frappe.enqueue("frappeapp.jobs.ping", queue="long", job_name="pinger")
    assert bj.get_jobs() == {SITE: ["frappeapp.jobs.ping"]}
    assert bj.get_jobs(site=SITE, queue="short") == {}
    assert bj.get_jobs(key="job_name") == {SITE: ["pinger"]}
    assert bj.get_queue("long").count == 1
    assert bj.get_workers() == []
    assert bj.get_redis_conn().ping()
    assert bj.RQ_RESULTS_TTL == 600


def test_what_is_not_there_raises_at_the_call(frappe: Any) -> None:
    from frappe.model.document import Document  # imports: a module mentioning it still loads

    with pytest.raises(frappe.FrappeUnavailableError, match=r"frappe\.db\.sql is not available"):
        frappe.db.sql("select 1")
    with pytest.raises(frappe.FrappeUnavailableError, match=r"frappe\.get_doc is not available"):
        frappe.get_doc("ToDo", "x")
    with pytest.raises(frappe.FrappeUnavailableError):
        Document()
    assert frappe.whitelist()(len) is len and frappe._("Hi") == "Hi"
    assert frappe.get_site_config()["marker"] == SITE
    assert frappe.local.site == SITE and frappe.conf.marker == SITE


def test_real_frappe_wins(tmp_path: Any) -> None:
    real = tmp_path / "frappe"
    real.mkdir()
    (real / "__init__.py").write_text("REAL = True\n")
    code = "import benchcelery.compat.install, frappe; print(getattr(frappe, 'REAL', False))"
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "True", out.stderr


def test_worker_processes_are_niced(bench: BenchHandle, frappe: Any) -> None:
    bench.set_config(background_process_niceness=5)
    frappe.enqueue("frappeapp.jobs.report_niceness", key="nice")
    burst(bench, timeout=120)
    assert bench.results("nice") == [os.nice(0) + 5]


def test_commands_find_both_id_forms(bench: BenchHandle, frappe: Any) -> None:
    frappe.enqueue("frappeapp.jobs.ping", job_id="scheduled_job::x")
    for form in ("scheduled_job::x", f"{SITE}::scheduled_job::x", f"{SITE}||scheduled_job::x"):
        shown = bench.run("--site", SITE, "jobs", "show", form)
        assert shown.returncode == 0 and f"{SITE}::scheduled_job::x" in shown.stdout, (form, shown.stderr)


def test_maintenance_events_and_cron_queues() -> None:
    from benchcelery.scheduler.events import parse_scheduler_events

    jobs, problems = parse_scheduler_events(
        "app",
        {
            "hourly_maintenance": ["app.h"],
            "daily_maintenance": ["app.d"],
            "cron": {"0 1 * * *": ["app.c"]},
            "cron_maintenance": {"0 2 * * *": ["app.m"]},
            "fortnightly": ["app.f"],
        },
    )
    found = {(j.event, j.method, j.cron, j.queue) for j in jobs}
    assert found == {
        ("hourly_maintenance", "app.h", "0 * * * *", "long"),
        ("daily_maintenance", "app.d", "0 0 * * *", "long"),
        ("cron", "app.c", "0 1 * * *", "default"),
        ("cron_long", "app.m", "0 2 * * *", "long"),
    }
    assert [str(p) for p in problems] == ["app: fortnightly app.f: unknown event type 'fortnightly'"]
