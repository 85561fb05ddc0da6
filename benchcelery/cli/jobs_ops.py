"""``bench jobs list|show|retry|delete|cancel``: see and act on individual jobs of the site."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import click

from benchcelery.cli.base import CliContext, echo_json, format_option, pass_ctx
from benchcelery.errors import ValidationError
from benchcelery.keys import UNKNOWN_SITE

STATES = ("queued", "started", "failed")


@click.group("jobs")
def jobs_group() -> None:
    """List, inspect, retry, delete and cancel jobs."""


@jobs_group.command("list")
@click.option("--state", type=click.Choice(STATES), help="Only jobs in this state (default: all).")
@click.option("--queue", help="Only this queue.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@format_option
@pass_ctx
def list_cmd(obj: CliContext, state: str | None, queue: str | None, limit: int, fmt: str) -> None:
    """Jobs of the site (--site all: every site), newest failures first."""
    from benchcelery.jobs.listing import list_jobs

    sites = None if obj.site_option == "all" else obj.sites()
    rt = obj.runtime()
    queues = rt.settings.parse_queues(queue) if queue else None
    jobs = list_jobs(rt, sites, [state] if state else list(STATES), queues, limit)
    if fmt == "json":
        echo_json([j.as_dict() for j in jobs])
        return
    if not jobs:
        click.echo("No jobs")
        return
    for j in jobs:
        when = _when(j.extra.get("failed_at") or j.started_at or j.enqueued_at)
        line = f"{j.state:<8} {j.queue:<8} {j.id}  {j.method}  {when}"
        if j.site == UNKNOWN_SITE:
            line += "  [no site]"
        if j.state == "failed":
            line += f"  {j.extra.get('exception', '')}"
        click.echo(line)


@jobs_group.command("show")
@click.argument("job_id")
@format_option
@pass_ctx
def show_cmd(obj: CliContext, job_id: str, fmt: str) -> None:
    """Everything known about one job (method, kwargs, site, queue, state, times, worker, traceback)."""
    from benchcelery.jobs.ops import find

    info = find(obj.runtime(), job_id, obj.site())
    data = info.as_dict()
    if fmt == "json":
        echo_json(data)
        return
    extra = data.pop("extra") or {}
    traceback = extra.pop("traceback", None)
    for key in ("id", "site", "queue", "state", "method", "event", "position"):
        if data.get(key) is not None:
            click.echo(f"{key}: {data[key]}")
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
        raise ValidationError("Give a JOB_ID or --all")
    rt = obj.runtime()
    if job_id:
        click.echo(f"Retried {retry_failed(rt, obj.site(), job_id)}")
        return
    queues = rt.settings.parse_queues(queue) if queue else None
    done = retry_all(rt, obj.sites(), queues)
    click.echo(f"Retried {len(done)} jobs")


@jobs_group.command("delete")
@click.argument("job_id")
@pass_ctx
def delete_cmd(obj: CliContext, job_id: str) -> None:
    """Delete a waiting job or a failed record."""
    from benchcelery.jobs.ops import delete_job

    state = delete_job(obj.runtime(), obj.site(), job_id)
    click.echo(f"Deleted {state} job {job_id}")


@jobs_group.command("cancel")
@click.argument("job_id")
@click.option("--terminate", is_flag=True, help="Kill the job if it is running.")
@pass_ctx
def cancel_cmd(obj: CliContext, job_id: str, terminate: bool) -> None:
    """Remove a waiting job, or revoke a running one (killed with --terminate)."""
    from benchcelery.jobs.ops import cancel_job

    what = cancel_job(obj.runtime(), obj.site(), job_id, terminate=terminate)
    click.echo(f"Job {job_id} {what}")


def _when(value: Any) -> str:
    if not value:
        return ""
    try:
        stamp = datetime.fromtimestamp(float(value), tz=UTC).strftime("%Y-%m-%d %H:%M:%S")
    except (TypeError, ValueError):
        return str(value)
    return f"{stamp} ({int(time.time() - float(value))}s ago)"


def register(cli: click.Group) -> None:
    cli.add_command(jobs_group)
