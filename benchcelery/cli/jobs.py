"""``bench jobs list|show|retry|delete|cancel``: see and act on individual jobs of the site."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import click

from benchcelery.bench.keys import UNKNOWN_SITE
from benchcelery.cli.base import (
    CliContext,
    echo_json,
    echo_text,
    format_option,
    pass_ctx,
    plural,
    queues_option,
    table,
    usage_error,
)

STATES = ("queued", "started", "failed", "scheduled", "retrying")


@click.group("jobs")
def jobs_group() -> None:
    """List, inspect, retry, delete and cancel jobs.

    A JOB_ID is the id `bench enqueue` printed (SITE::ID), the part after `::` (of the selected
    site), or a unique start of either (the dashboard's 8 characters); a start that several jobs
    share is refused with a line naming them.
    """


@jobs_group.command("list")
@click.option("--state", type=click.Choice(STATES), help="Only jobs in this state (default: all).")
@click.option("--queue", help="Only this queue.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True, help="Show at most N jobs.")
@format_option
@pass_ctx
def list_cmd(obj: CliContext, state: str | None, queue: str | None, limit: int, fmt: str) -> None:
    """Jobs of the site (--site all: every site), newest failures first."""
    from benchcelery.jobs.listing import list_jobs

    queues = queues_option(obj, queue)
    sites = None if obj.site_option == "all" else obj.sites()
    rt = obj.runtime()
    jobs = list_jobs(rt, sites, [state] if state else list(STATES), queues, limit)
    if fmt == "json":
        echo_json([j.as_dict() for j in jobs])
        return
    if not jobs:
        click.echo("No jobs")
        return
    rows = [
        (
            j.state,
            f"{j.queue} [not configured]" if j.extra.get("unconfigured_queue") else j.queue,
            f"{j.id} [no site]" if j.site == UNKNOWN_SITE else j.id,
            j.method,
            _when(j.extra.get("due") or j.extra.get("failed_at") or j.started_at or j.enqueued_at),
            _last_exception(j),
        )
        for j in jobs
    ]
    click.echo("\n".join(table(("STATE", "QUEUE", "ID", "METHOD", "SINCE", "EXCEPTION"), rows)))


@jobs_group.command("show")
@click.argument("job_id")
@format_option
@pass_ctx
def show_cmd(obj: CliContext, job_id: str, fmt: str) -> None:
    """Everything known about one job (method, kwargs, site, queue, state, times, worker, traceback).

    JOB_ID is the id `bench enqueue` printed (SITE::ID) or the part after `::` (with --site), or a
    unique start of either (as the dashboard shows). A job enqueued with a job id answers "finished"
    for rq_results_ttl seconds after it succeeded.
    """
    from benchcelery.errors import BenchError
    from benchcelery.jobs.inspect import find_typed

    rt = obj.runtime()
    _site, full = _scoped(obj, job_id)
    info = find_typed(rt, full)
    if info is None:
        raise BenchError(
            f"No job {full} waiting, running or failed (a job that finished is remembered only when it has a job id)"
        )
    data = info.as_dict()
    if fmt == "json":
        echo_json(data)
        return
    extra = data.pop("extra") or {}
    traceback = extra.pop("traceback", None)
    for key in ("id", "site", "queue", "state", "method", "event", "position"):
        if data.get(key) not in (None, ""):
            echo_text(f"{key}: {data[key]}")
    if info.state == "finished":
        echo_text("(it succeeded; its details are not kept)")
        return
    echo_text(f"kwargs: {json.dumps(data['kwargs'], default=str)}")
    for key in ("enqueued_at", "started_at"):
        if data.get(key):
            echo_text(f"{key}: {_when(data[key])}")
    for key, value in extra.items():
        if value is not None and key != "delivery_tag":
            echo_text(f"{key}: {_when(value) if key.endswith('_at') else value}")
    if traceback:
        echo_text("traceback:\n" + traceback.rstrip())


@jobs_group.command("retry")
@click.argument("job_id", required=False)
@click.option("--all", "all_", is_flag=True, help="Retry every failed job of the site.")
@click.option("--queue", help="With --all: only this queue.")
@pass_ctx
def retry_cmd(obj: CliContext, job_id: str | None, all_: bool, queue: str | None) -> None:
    """Run failed jobs again with their original arguments (the failed record goes once queued)."""
    from benchcelery.jobs.ops import retry_all, retry_failed

    if bool(job_id) == all_:
        raise usage_error("Give a JOB_ID or --all")
    queues = queues_option(obj, queue)
    rt = obj.runtime()
    if job_id:
        site, full = _scoped(obj, job_id)
        echo_text(f"Retried {retry_failed(rt, site, full)}")
        return
    done = retry_all(rt, obj.sites(), queues)
    echo_text(f"Retried {plural(len(done), 'job')}")


@jobs_group.command("delete")
@click.argument("job_id")
@pass_ctx
def delete_cmd(obj: CliContext, job_id: str) -> None:
    """Delete a waiting job or a failed record."""
    from benchcelery.jobs.ops import delete_job, resolve_id

    site, full = _scoped(obj, job_id)
    rt = obj.runtime()
    resolved = resolve_id(rt, site, full)
    state = delete_job(rt, site, resolved)
    echo_text(f"Deleted {state} job {job_id if resolved == full else resolved}")


@jobs_group.command("cancel")
@click.argument("job_id")
@click.option("--terminate", is_flag=True, help="Kill the job if it is running.")
@pass_ctx
def cancel_cmd(obj: CliContext, job_id: str, terminate: bool) -> None:
    """Remove a waiting job, or revoke a running one (killed with --terminate)."""
    from benchcelery.jobs.ops import cancel_job, resolve_id

    site, full = _scoped(obj, job_id)
    rt = obj.runtime()
    resolved = resolve_id(rt, site, full)  # a start of an id: the message names the whole one
    what = cancel_job(rt, site, resolved, terminate=terminate)
    echo_text(f"Job {job_id if resolved == full else resolved} {what}")


@jobs_group.command("run-now")
@click.argument("job_id")
@pass_ctx
def run_now_cmd(obj: CliContext, job_id: str) -> None:
    """Move a scheduled or retrying job to its queue now (it keeps its id and attempts)."""
    from benchcelery.errors import BenchError
    from benchcelery.jobs import scheduled

    rt = obj.runtime()
    full = _delayed_id(obj, rt, job_id)
    if not scheduled.run_now(rt, full):
        raise BenchError(f"Job {full} is not scheduled or retrying (any more)")
    click.echo(f"Queued {full}")


@jobs_group.command("give-up")
@click.argument("job_id")
@pass_ctx
def give_up_cmd(obj: CliContext, job_id: str) -> None:
    """Cancel a scheduled job, or give up on a retrying one (recorded as failed with its attempts)."""
    from benchcelery.errors import BenchError
    from benchcelery.jobs import scheduled

    rt = obj.runtime()
    full = _delayed_id(obj, rt, job_id)
    row = scheduled.cancel(rt, full)
    if row is None:
        raise BenchError(f"Job {full} is not scheduled or retrying (any more)")
    click.echo(f"Gave up on {full} (recorded as failed)" if row.kind == "retrying" else f"Cancelled {full}")


def _delayed_id(obj: CliContext, rt: Any, job_id: str) -> str:
    """The full id of the delayed job JOB_ID names (a unique start is enough)."""
    from benchcelery.errors import BenchError
    from benchcelery.jobs import scheduled

    _site, full = _scoped(obj, job_id)
    if scheduled.find(rt, full) is not None:
        return full
    found = scheduled.find_prefix(rt, full)
    if len(found) > 1:
        raise BenchError(f"Job id {job_id} is ambiguous: {', '.join(sorted(found)[:5])}")
    return found[0] if found else full


def _last_exception(job: Any) -> str:
    if job.state == "failed":
        return str(job.extra.get("exception") or "")
    attempts = job.extra.get("attempts") or []
    return f"{attempts[-1].get('exception')} (attempt {len(attempts)})" if attempts else ""


def _scoped(obj: CliContext, job_id: str) -> tuple[str, str]:
    """(site, full id) of JOB_ID: a full SITE::ID or SITE||ID, or the id given at enqueue. A full id
    needs no --site; with sites selected (--site, the
    environment or default_site), a job of another site of the bench is refused. Records that belong
    to no site of the bench (``?::...``, a removed site) are reachable whatever is selected."""
    from benchcelery.jobs.inspect import find_job
    from benchcelery.jobs.ops import scope_job_id

    head, develop, rest = job_id.partition("||")  # Frappe develop's <site>||<id>
    if develop and obj.bench.site_exists(head):
        job_id = f"{head}::{rest}"
    site, sep, _ = job_id.partition("::")
    if sep and not obj.bench.site_exists(site):
        # An id given at enqueue may itself contain "::" (Frappe's "scheduled_job::<method>" style).
        selected = obj.sites(required=False)
        bare = f"{selected[0]}::{job_id}" if selected else None
        if bare and find_job(obj.runtime(), bare) is not None:
            return selected[0], bare
        return site, job_id
    sites = obj.sites(required=not sep)
    if sep and not sites:
        return site, job_id
    return scope_job_id(job_id, sites)


def _when(value: Any) -> str:
    if not value:
        return ""
    try:
        stamp = datetime.fromtimestamp(float(value), tz=UTC).strftime("%Y-%m-%d %H:%M:%S")
    except (TypeError, ValueError):
        return str(value)
    age = int(time.time() - float(value))
    return f"{stamp} ({age}s ago)" if age >= 0 else f"{stamp} (in {-age}s)"


def register(cli: click.Group) -> None:
    from benchcelery.cli.top import top_cmd

    jobs_group.add_command(top_cmd)
    cli.add_command(jobs_group)
