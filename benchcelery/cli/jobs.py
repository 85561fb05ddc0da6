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
    format_option,
    pass_ctx,
    plural,
    queues_option,
    table,
    usage_error,
)

STATES = ("queued", "started", "failed")


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
            _when(j.extra.get("failed_at") or j.started_at or j.enqueued_at),
            str(j.extra.get("exception") or "") if j.state == "failed" else "",
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
            click.echo(f"{key}: {data[key]}")
    if info.state == "finished":
        click.echo("(it succeeded; its details are not kept)")
        return
    click.echo(f"kwargs: {json.dumps(data['kwargs'], default=str)}")
    for key in ("enqueued_at", "started_at"):
        if data.get(key):
            click.echo(f"{key}: {_when(data[key])}")
    for key, value in extra.items():
        if value is not None and key != "delivery_tag":
            click.echo(f"{key}: {_when(value) if key.endswith('_at') else value}")
    if traceback:
        click.echo("traceback:\n" + traceback.rstrip())


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
        click.echo(f"Retried {retry_failed(rt, site, full)}")
        return
    done = retry_all(rt, obj.sites(), queues)
    click.echo(f"Retried {plural(len(done), 'job')}")


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
    click.echo(f"Deleted {state} job {job_id if resolved == full else resolved}")


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
    click.echo(f"Job {job_id if resolved == full else resolved} {what}")


def _scoped(obj: CliContext, job_id: str) -> tuple[str, str]:
    """(site, full id) of JOB_ID. A full SITE::ID needs no --site; with sites selected (--site, the
    environment or default_site), a job of another site of the bench is refused. Records that belong
    to no site of the bench (``?::...``, a removed site) are reachable whatever is selected."""
    from benchcelery.jobs.ops import scope_job_id

    site, sep, _ = job_id.partition("::")
    if sep and not obj.bench.site_exists(site):
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
    return f"{stamp} ({int(time.time() - float(value))}s ago)"


def register(cli: click.Group) -> None:
    from benchcelery.cli.top import top_cmd

    jobs_group.add_command(top_cmd)
    cli.add_command(jobs_group)
