"""Background jobs written against Frappe's API only (``import frappe``), the way an app ships them.

Results are reported into the queue Redis (``get_redis_conn()``) under ``test:<key>`` so the tests
can read them.
"""

import json

import frappe
from frappe import _
from frappe.utils.background_jobs import get_redis_conn, is_job_enqueued


def _report(key, value):
    get_redis_conn().rpush(f"test:{key}", json.dumps(value))


@frappe.whitelist()
def start_import(rows, key):
    """What a whitelisted API method does: enqueue the work with callbacks and return the job id."""
    if is_job_enqueued(f"import::{key}"):
        frappe.throw(_("An import is already running"))
    job = frappe.enqueue(
        "frappeapp.jobs.import_rows",
        queue="short",
        timeout=600.0,
        job_id=f"import::{key}",
        deduplicate=True,
        on_success="frappeapp.jobs.on_import_success",
        on_failure="frappeapp.jobs.on_import_failure",
        rows=rows,
        key=key,
    )
    return job.id


def import_rows(rows, key):
    conf = frappe.get_site_config()
    total = len(rows)
    for i, _row in enumerate(rows, 1):
        frappe.publish_progress(i * 100 / total, title=_("Importing"), description=f"row {i} of {total}")
    frappe.enqueue("frappeapp.jobs.notify", enqueue_after_commit=True, key=key, text="imported")
    _report(key, {"site": frappe.local.site, "marker": conf.get("marker"), "flags": dict(frappe.flags)})
    return total


def notify(key, text):
    _report(f"{key}-notify", text)


def flaky(key):
    """Fails on its first run (with an Error Log), succeeds when retried."""
    frappe.enqueue("frappeapp.jobs.notify", enqueue_after_commit=True, key=key, text="never sent on failure")
    attempt = frappe.cache().incr(f"frappeapp:attempts:{key}")
    if attempt == 1:
        try:
            raise ValueError("remote service refused the first call")
        except ValueError:
            frappe.log_error(title=f"flaky {key}")
        raise RuntimeError(f"attempt {attempt} failed")
    _report(key, {"attempt": attempt})
    return attempt


def on_import_success(job, connection, result, *args, **kwargs):
    connection.rpush(
        f"test:{job.kwargs['key']}-callback",
        json.dumps({"outcome": "success", "job_id": job.id, "result": result}),
    )


def on_import_failure(job, connection, type, value, traceback):
    connection.rpush(
        f"test:{job.kwargs['key']}-callback",
        json.dumps({"outcome": "failure", "job_id": job.id, "type": type.__name__, "value": str(value)}),
    )


def before_job(method, kwargs, transaction_type):
    if method.startswith("frappeapp."):
        frappe.flags.in_frappeapp_job = True
        _report("hooks", ["before", transaction_type, method])


def after_job(method, kwargs, result):
    if method.startswith("frappeapp."):
        _report("hooks", ["after", method])


def hourly_cleanup():
    _report("scheduled", ["hourly_maintenance", frappe.local.job["queue"], frappe.local.site])


def daily_cleanup():
    _report("scheduled", ["daily_maintenance", frappe.local.job["queue"], frappe.local.site])


def daily_digest():
    _report("scheduled", ["daily", frappe.local.job["queue"], frappe.local.site])


def ping():
    return "pong"


def fail_function():
    return 1 / 0


def report_niceness(key):
    import os

    _report(key, os.nice(0))
