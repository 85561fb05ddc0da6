"""Scheduler commands: schedule, enable-/disable-scheduler, scheduler STATE, set-maintenance-mode,
trigger-scheduler-event."""

from __future__ import annotations

import sys

import click

from benchcelery.cli.base import CliContext, echo_json, format_option, pass_ctx, table
from benchcelery.errors import BenchError


def _sites(obj: CliContext) -> list[str]:
    sites = obj.sites()
    if not sites:
        raise BenchError("No sites in this bench")
    return sites


@click.command("schedule")
@pass_ctx
def schedule_cmd(obj: CliContext) -> None:
    """Run the scheduler (Celery beat on RedBeat) for every site of the bench.

    A second `bench schedule` on the same bench waits as a hot standby and takes over within a
    minute when the active one dies.
    """
    from benchcelery.broker.internals import require
    from benchcelery.scheduler.beat import run_beat

    require()  # the private names of Celery/RedBeat/kombu/redis-py it relies on (one line, exit 1)
    if obj.site_option:
        obj.sites()  # accepted as in the guide; the scheduler serves every site
    sys.exit(run_beat(obj.runtime()))


def _toggle(obj: CliContext, action: str) -> None:
    from benchcelery.scheduler.state import apply_action

    for site in _sites(obj):
        apply_action(obj.bench, site, action)
        # Frappe's exact words (scripts match them); `scheduler enable` keeps Frappe's other wording.
        click.echo(f"{'Enabled' if action == 'enable' else 'Disabled'} for {site}")


@click.command("enable-scheduler")
@pass_ctx
def enable_scheduler_cmd(obj: CliContext) -> None:
    """Enable the scheduler for the site(s) (enable_scheduler: 1 in site_config.json)."""
    _toggle(obj, "enable")


@click.command("disable-scheduler")
@pass_ctx
def disable_scheduler_cmd(obj: CliContext) -> None:
    """Disable the scheduler for the site(s) (enable_scheduler: 0 in site_config.json)."""
    _toggle(obj, "disable")


@click.command("scheduler")
@click.argument("state", type=click.Choice(["enable", "disable", "pause", "resume", "status"]))
@format_option
@click.option("-v", "--verbose", is_flag=True, help="status: why the site is inactive, and every scheduled job.")
@pass_ctx
def scheduler_cmd(obj: CliContext, state: str, fmt: str, verbose: bool) -> None:
    """Change or show the scheduler state of the site(s): enable, disable, pause, resume, status.

    \b
    State is kept in site_config.json (enable_scheduler, pause_scheduler), so hand edits work;
    a running `bench schedule` applies it at its next tick.
    """
    sites = _sites(obj)
    if state == "status":
        _status(obj, sites, fmt, verbose or obj.verbose)
        return
    from benchcelery.scheduler.state import ACTION_WORDS, apply_action

    results = []
    for site in sites:
        now = apply_action(obj.bench, site, state)
        results.append({"status": ACTION_WORDS[state], "site": site})
        if fmt == "text":
            click.echo(f"Scheduler is {ACTION_WORDS[state]} for site {site}")
            if state in ("enable", "resume") and not now.active:
                click.echo(f"Note: {site} is still inactive: {'; '.join(now.reasons)}", err=True)
    if fmt == "json":
        echo_json(results[0] if len(results) == 1 else results)


def _status(obj: CliContext, sites: list[str], fmt: str, verbose: bool) -> None:
    from benchcelery.scheduler.status import format_time, scheduler_status

    rt = obj.runtime()
    statuses = [scheduler_status(rt, site, jobs=verbose or fmt == "json") for site in sites]
    if fmt == "json":
        data = [s.as_dict() for s in statuses]
        echo_json(data[0] if len(data) == 1 else data)
        return
    for i, st in enumerate(statuses):
        if len(statuses) > 1:
            click.echo(("\n" if i else "") + f"Site: {st.site}")
        click.echo(f"Scheduler: {st.status}")
        click.echo(f"Last executed: {format_time(st.last_executed, st.time_zone) or 'never'}")
        click.echo(f"Pending events: {st.pending_events}")
        click.echo(f"Failed jobs: {st.failed_jobs}")
        if not verbose:
            continue
        click.echo(f"Failed scheduled runs: {st.failed_scheduled_jobs} (of the failed jobs above)")
        for reason in st.reasons:
            click.echo(f"Inactive: {reason}")
        proc = st.scheduler
        if proc.running:
            click.echo(
                f"Scheduler process: running (pid {proc.pid} on {proc.host}, last tick "
                f"{format_time(proc.last_tick, st.time_zone)})"
            )
        else:
            click.echo("Scheduler process: not running (no heartbeat; start `bench schedule`)")
        click.echo(f"Scheduled jobs: {len(st.jobs)} (times in {st.time_zone})")
        rows = []
        for job in st.jobs:
            event = f"cron {job.cron}" if job.event.startswith("cron") and job.cron else job.event
            if job.event == "cron_long":
                event += " (long)"
            outcome = job.last_outcome or "-"
            if job.last_error:
                outcome += f" ({job.last_error})"
            last_run = format_time(job.last_run, st.time_zone) or "never"
            next_run = format_time(job.next_run, st.time_zone) or ("-" if st.active else st.status)
            rows.append((event, job.method, job.queue, last_run, next_run, outcome))
        if rows:
            header = ("EVENT", "METHOD", "QUEUE", "LAST RUN", "NEXT RUN", "LAST OUTCOME")
            click.echo("\n".join(table(header, rows, indent="  ")))
        for problem in st.problems:
            click.echo(f"Problem: {problem}")


@click.command("set-maintenance-mode")
@click.argument("state", type=click.Choice(["on", "off"]))
@pass_ctx
def set_maintenance_mode_cmd(obj: CliContext, state: str) -> None:
    """Put the site(s) in maintenance mode (the scheduler skips them) or take them out."""
    from benchcelery.scheduler.state import apply_action

    for site in _sites(obj):
        apply_action(obj.bench, site, f"maintenance_{state}")
        click.echo(f"Maintenance mode is {state} for site {site}")


@click.command("trigger-scheduler-event")
@click.argument("event")
@format_option
@pass_ctx
def trigger_cmd(obj: CliContext, event: str, fmt: str) -> None:
    """Enqueue the scheduled jobs of EVENT now, through the workers.

    \b
    EVENT: an event type (all, hourly, daily, weekly, monthly, yearly, hourly_long,
    daily_long, weekly_long, monthly_long, hourly_maintenance, daily_maintenance, cron,
    cron_long; `all` = every scheduled job)
    or a scheduled job's method path (Frappe's form).
    Exit 1 when EVENT is unknown or a job could not be enqueued.
    """
    from benchcelery.scheduler.trigger import ENQUEUED, SKIPPED, trigger

    sites = _sites(obj)
    result = trigger(obj.runtime(), sites, event)
    if fmt == "json":
        echo_json(result.as_dict())
    else:
        if not result.runs:
            click.echo(f"No scheduled jobs for event {result.event}")
        for run in result.runs:
            if run.status == ENQUEUED:
                click.echo(f"Enqueued {run.method} ({run.event}, queue {run.queue}) for {run.site}")
            elif run.status == SKIPPED:
                click.echo(
                    f"Skipped {run.method} ({run.event}) for {run.site}: its previous run is still queued or running"
                )
            else:
                click.echo(f"Could not enqueue {run.method} ({run.event}) for {run.site}: {run.error}", err=True)
    if not result.ok:
        sys.exit(1)


def register(cli: click.Group) -> None:
    for command in (
        schedule_cmd,
        enable_scheduler_cmd,
        disable_scheduler_cmd,
        scheduler_cmd,
        set_maintenance_mode_cmd,
        trigger_cmd,
    ):
        cli.add_command(command)
