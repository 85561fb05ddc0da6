"""``show-pending-jobs``, ``doctor``, ``purge-jobs``, ``ready-for-migration``.

Read commands import no Celery: Redis alone answers them.
"""

from __future__ import annotations

import sys

import click

from benchcelery.cli.base import CliContext, echo_json, echo_text, format_option, pass_ctx, plural, queues_option
from benchcelery.errors import EXIT_FAILURE


def _scope(obj: CliContext) -> list[str] | None:
    """The selected sites; None for the whole bench (``--site all``)."""
    sites = obj.sites()
    return None if obj.site_option == "all" else sites


@click.command("show-pending-jobs")
@click.option("-v", "--verbose", is_flag=True, help="List each pending job (id, method, kwargs, age, position).")
@format_option
@pass_ctx
def show_pending_jobs_cmd(obj: CliContext, verbose: bool, fmt: str) -> None:
    """Pending, failed and started jobs per queue for the site (--site all: the whole bench)."""
    from benchcelery.diagnostics.pending import pending_report, render_text

    report = pending_report(obj.runtime(), _scope(obj), verbose=verbose or obj.verbose)
    if fmt == "json":
        echo_json(report.as_dict())
    else:
        echo_text(render_text(report))


@click.command("doctor")
@click.option("--no-db", is_flag=True, help="Skip the database check.")
@click.option(
    "--fail-on",
    metavar="ITEMS",
    help="Also exit 1 on: failed[=N] (failed jobs of a site), dead-workers[=N], warnings; comma-separated "
    "(default: config doctor_fail_on, else none).",
)
@format_option
@pass_ctx
def doctor_cmd(obj: CliContext, no_db: bool, fail_on: str | None, fmt: str) -> None:
    """Workers, scheduler, queues, failed jobs, Redis and database of each site (all sites by default).

    Exit code 0 when healthy, 1 when problems were found, 69 when Redis is unreachable. Failed jobs
    and dead workers are shown but count as problems only with --fail-on.
    """
    from benchcelery.diagnostics.doctor import doctor_report, render_text
    from benchcelery.diagnostics.fail_on import fail_on_problems, parse_fail_on
    from benchcelery.errors import ValidationError

    try:
        thresholds = parse_fail_on(fail_on)
    except ValidationError as exc:
        raise click.BadParameter(str(exc), param_hint="'--fail-on'") from None
    sites = obj.sites(required=False) or obj.bench.sites()
    rt = obj.runtime()
    if fail_on is None:
        try:
            thresholds = parse_fail_on(rt.settings.conf.get("doctor_fail_on"))
        except ValidationError as exc:
            raise ValidationError(f"Config key doctor_fail_on: {exc}") from None
    report = doctor_report(rt, sites, check_db=not no_db)
    report.problems += fail_on_problems(report, thresholds)
    if fmt == "json":
        echo_json(report.as_dict())
    else:
        echo_text(render_text(report))
    sys.exit(0 if report.healthy else EXIT_FAILURE)


@click.command("purge-jobs")
@click.option("--queue", help="Only these queues (comma-separated).")
@click.option(
    "--event",
    metavar="TAG",
    help="Only waiting jobs enqueued with this event tag: a scheduler event (hourly, daily, weekly, monthly, "
    "yearly, *_long, cron) or the tag of `bench enqueue --event`; all = every tagged job. Failed records are kept.",
)
@click.option("--scheduled", is_flag=True, help="Also cancel the jobs waiting to run later or to be retried.")
@format_option
@pass_ctx
def purge_jobs_cmd(obj: CliContext, queue: str | None, event: str | None, scheduled: bool, fmt: str) -> None:
    """Delete the waiting jobs and failed records of the selected site (--site, $BENCH_SITE or
    default_site, as every command), or of every site with --site all or when no site is selected.

    Running jobs are never touched; a job a worker takes meanwhile is simply not purged. Jobs that
    wait to run later or to be retried are kept unless --scheduled is given (the line says how many).
    """
    from benchcelery.errors import ValidationError
    from benchcelery.jobs import scheduled as delayed_jobs
    from benchcelery.jobs.ops import event_needle, purge_jobs

    queues = queues_option(obj, queue)
    if event is not None:
        try:
            event_needle(event)
        except ValidationError as exc:
            raise click.BadParameter(str(exc), param_hint="'--event'") from None
    sites = obj.sites(required=False)
    scope = None if not sites or obj.site_option == "all" else sites
    rt = obj.runtime()
    result = purge_jobs(rt, scope, queues, event)
    queue_names = queues or list(rt.settings.queues)
    delayed = delayed_jobs.purge(rt, scope, queue_names) if scheduled and event is None else 0
    kept = delayed_jobs.count_for(rt, scope, queue_names)
    if fmt == "json":
        echo_json({"purged": result.total + delayed, "pending": result.pending, "failed": result.failed,
                   "scheduled": delayed, "scheduled_kept": kept})  # fmt: skip
    else:
        where = f"site {', '.join(scope)}" if scope else "every site"
        also = f", {delayed} scheduled" if scheduled else ""
        click.echo(
            f"Purged {plural(result.total + delayed, 'job')} of {where} "
            f"({result.pending} pending, {result.failed} failed{also})"
        )
        if kept:
            click.echo(f"Kept {plural(kept, 'scheduled job')} (run later or retrying; --scheduled purges them)")


@click.command("ready-for-migration")
@pass_ctx
def ready_for_migration_cmd(obj: CliContext) -> None:
    """Exit 0 when the site has no waiting or running jobs, else 1 (for deploy scripts)."""
    from benchcelery.diagnostics.pending import pending_report

    site = obj.site()
    report = pending_report(obj.runtime(), [site])
    if report.total_pending or report.total_started:
        click.echo(f"NOT READY for migration: site {site} has pending background jobs")
        sys.exit(EXIT_FAILURE)
    click.echo(f"READY for migration: site {site} does not have any background jobs")


def register(cli: click.Group) -> None:
    for command in (show_pending_jobs_cmd, doctor_cmd, purge_jobs_cmd, ready_for_migration_cmd):
        cli.add_command(command)
