"""A Frappe app, written as Frappe's documentation teaches (tests/apps/frappeapp: ``import frappe``,
hooks with maintenance events, whitelisted functions, rq-signature callbacks, a ``before_job`` hook
taking ``transaction_type``), runs unchanged: enqueue, worker, scheduler, failure, retry and purge,
with its progress events reaching a realtime client."""

from __future__ import annotations

import importlib
import json
import shutil
import sys
import uuid
from collections.abc import Iterator

import pytest

from benchcelery.deploy.scaffold import add_app
from tests.conftest import TESTS, BenchHandle, burst, wait_until
from tests.test_realtime import Client, Relay, token

SITE = "site1.local"


@pytest.fixture
def app(bench: BenchHandle) -> Iterator[BenchHandle]:
    shutil.copytree(TESTS / "apps" / "frappeapp", bench.root / "apps" / "frappeapp")
    add_app(bench.bench, "frappeapp")
    bench.rt(SITE)  # the app's own code runs in this process too, as a script would run it
    yield bench
    for name in [m for m in sys.modules if m == "frappeapp" or m.startswith("frappeapp.")]:
        del sys.modules[name]


def jobs_module() -> object:
    return importlib.import_module("frappeapp.jobs")


def test_enqueue_worker_callbacks_hooks_after_commit_and_progress(app: BenchHandle) -> None:
    relay = Relay(app)
    client = Client(relay, SITE, token(relay.bench, SITE, "Administrator"))
    try:
        key = f"imp{uuid.uuid4().hex[:6]}"
        job_id = jobs_module().start_import(rows=["a", "b", "c", "d"], key=key)  # type: ignore[attr-defined]
        assert job_id == f"{SITE}::import::{key}"
        import frappe
        from frappe.utils.background_jobs import get_job_status, is_job_enqueued

        assert frappe.IS_BENCHCELERY_STAND_IN
        assert is_job_enqueued(f"import::{key}") and get_job_status(job_id) == "queued"
        burst(app, timeout=120)
        burst(app, timeout=120)  # the job held until the import succeeded
        assert get_job_status(f"import::{key}") == "finished"
        ran = app.wait_results(key, 1)[0]
        assert ran["site"] == SITE and ran["marker"] == SITE and ran["flags"] == {"in_frappeapp_job": True}
        callback = app.wait_results(f"{key}-callback", 1)[0]
        assert callback == {"outcome": "success", "job_id": job_id, "result": 4}
        assert app.wait_results(f"{key}-notify", 1) == ["imported"]
        hooks = app.results("hooks")
        assert ["before", "job", "frappeapp.jobs.import_rows"] in hooks
        assert ["after", "frappeapp.jobs.import_rows"] in hooks
        progress = client.wait_for("progress")
        assert progress["title"] == "Importing" and progress["percent"] == 25.0
        wait_until(lambda: client.names().count("progress") == 4, 30, what="four progress events")
        assert frappe.enqueue("frappeapp.jobs.notify", key=key, text="x").get_status() == "queued"
    finally:
        client.close()


def test_failure_error_log_retry_and_dropped_after_commit(app: BenchHandle) -> None:
    key = f"flaky{uuid.uuid4().hex[:6]}"
    import frappe

    job = frappe.enqueue("frappeapp.jobs.flaky", key=key, on_failure="frappeapp.jobs.on_import_failure")
    burst(app, timeout=120)
    assert job.get_status() == "failed" and job.is_failed
    assert "RuntimeError: attempt 1 failed" in (job.exc_info or "")
    callback = app.wait_results(f"{key}-callback", 1)[0]
    assert callback["outcome"] == "failure" and callback["type"] == "RuntimeError"
    failed = app.run("--site", SITE, "jobs", "list", "--state", "failed")
    assert failed.returncode == 0, failed.stderr
    assert job.id in failed.stdout  # the failed job, and the Error Log it wrote, where operators look
    assert f"Error Log: flaky {key}" in failed.stdout
    retried = app.run("--site", SITE, "jobs", "retry", job.id)
    assert retried.returncode == 0, retried.stderr
    burst(app, timeout=120)
    burst(app, timeout=120)
    assert app.wait_results(key, 1) == [{"attempt": 2}]
    # The failed run's held job was dropped; the successful retry's was pushed.
    assert app.wait_results(f"{key}-notify", 1) == ["never sent on failure"]
    assert len(app.results(f"{key}-notify")) == 1


def test_scheduler_maintenance_events_and_purge(app: BenchHandle) -> None:
    for event in ("hourly_maintenance", "daily_maintenance", "daily"):
        result = app.run("--site", SITE, "trigger-scheduler-event", event)
        assert result.returncode == 0, result.stderr
        assert ("queue long" if "maintenance" in event else "queue default") in result.stdout
    burst(app, timeout=120)
    ran = sorted(tuple(r) for r in app.results("scheduled"))
    assert ran == [
        ("daily", "default", SITE),
        ("daily_maintenance", "long", SITE),
        ("hourly_maintenance", "long", SITE),
    ]
    listed = json.loads(app.run("--site", SITE, "scheduler", "status", "-v", "--format", "json").stdout or "{}")
    assert not [p for p in listed.get("problems", []) if "unknown event type" in p]

    kwargs = '{"key": "p", "text": "t"}'
    enqueued = app.run("--site", SITE, "enqueue", "frappeapp.jobs.notify", "--event", "nightly", "--kwargs", kwargs)
    assert enqueued.returncode == 0, enqueued.stderr
    purged = app.run("--site", SITE, "purge-jobs", "--event", "nightly")
    assert purged.returncode == 0, purged.stderr
    assert "Purged 1 job" in purged.stdout


def test_unknown_event_type_is_a_doctor_warning(app: BenchHandle) -> None:
    hooks = app.root / "apps" / "frappeapp" / "hooks.py"
    hooks.write_text(hooks.read_text() + '\nscheduler_events["fortnightly"] = ["frappeapp.jobs.daily_digest"]\n')
    result = app.run("--site", SITE, "doctor")
    assert "unknown event type 'fortnightly'" in result.stdout
