"""Production commands around the deploy files: ``bench restart``, ``bench setup production``,
``bench disable-production``, ``bench setup sudoers``."""

from __future__ import annotations

import click

from benchcelery.cli.base import CliContext, pass_ctx, usage_error


def _run(steps: list, dry_run: bool) -> None:  # type: ignore[type-arg]
    from benchcelery.deploy.production import run_steps

    run_steps(steps, dry_run, click.echo)


def warn_user(user: str) -> None:
    from benchcelery.deploy.production import user_warnings

    for line in user_warnings(user):
        click.secho(line, fg="yellow", err=True)


@click.command("restart")
@click.option("--web", is_flag=True, help="Only the web programs: realtime relay, dashboard, metrics exporter.")
@click.option("--supervisor", is_flag=True, help="Only look for supervisor programs.")
@click.option("--systemd", is_flag=True, help="Only look for systemd units.")
@pass_ctx
def restart_cmd(obj: CliContext, web: bool, supervisor: bool, systemd: bool) -> None:
    """Restart the bench's scheduler and workers gracefully (and its web programs), however it runs:
    supervisor_restart_cmd from the config, else its supervisor groups (supervisorctl, then sudo -n),
    else its systemd targets, else a running `bench start` (restarted in place by SIGUSR1).

    \b
    A stop is Celery's warm shutdown: a worker takes no new job, finishes the running one (within
    its queue's stop wait: timeout + 60 s unless workers.<queue>.stop_timeout), then exits; jobs
    it had reserved go back to their queue. One line per group or unit restarted; nothing of this
    bench running: one line saying what was looked for, exit 1.
    """
    from benchcelery.deploy.restart import restart

    if supervisor and systemd:
        raise usage_error("--supervisor and --systemd exclude each other")
    for line in restart(obj.bench, supervisor=supervisor, systemd=systemd, web=web):
        click.echo(line)


@click.command("production")
@click.argument("user")
@click.option("--yes", "-y", is_flag=True, help="Overwrite config files and replace links that differ.")
@click.option("--dry-run", is_flag=True, help="Print every file it would write or link and every command it would run.")
@pass_ctx
def setup_production_cmd(obj: CliContext, user: str, yes: bool, dry_run: bool) -> None:
    """Run this bench in production as USER: write config/supervisor.conf (config/systemd/ when
    restart_systemd_on_update is set), link it into /etc/supervisor/conf.d (/etc/systemd/system),
    reload supervisor (systemctl daemon-reload + enable --now) and set restart_supervisor_on_update.

    \b
    The job part of Frappe's `bench setup production` only: no nginx, no fail2ban, no packages
    installed. Run as root (sudo). $BENCH_SYSTEM_ROOT puts /etc under another directory (tests,
    staging); systemctl is then skipped. Undo: bench disable-production.
    """
    from benchcelery.deploy.production import production_steps

    warn_user(user)
    _run(production_steps(obj.bench, user, yes), dry_run)


@click.command("sudoers")
@click.argument("user")
@click.option("--dry-run", is_flag=True, help="Print the file instead of writing it.")
@pass_ctx
def setup_sudoers_cmd(obj: CliContext, user: str, dry_run: bool) -> None:
    """Write /etc/sudoers.d/benchcelery-USER: USER may run supervisorctl, and systemctl
    restart/stop/start of this bench's units and daemon-reload, without a password (what
    `bench restart` needs). Checked with visudo when installed. Run as root."""
    from benchcelery.deploy.production import sudoers_steps, sudoers_text

    warn_user(user)
    if dry_run:
        click.echo(sudoers_text(user, obj.bench), nl=False)
    _run(sudoers_steps(obj.bench, user), dry_run)


@click.command("disable-production")
@click.option("--dry-run", is_flag=True, help="Print what it would remove and run.")
@pass_ctx
def disable_production_cmd(obj: CliContext, dry_run: bool) -> None:
    """Undo `bench setup production`: remove this bench's links from /etc/supervisor/conf.d (and
    /etc/systemd/system, after disable --now) and reload. The files in config/ stay."""
    from benchcelery.deploy.production import disable_production_steps

    _run(disable_production_steps(obj.bench), dry_run)


def register(cli: click.Group) -> None:
    cli.add_command(restart_cmd)
    cli.add_command(disable_production_cmd)
    setup = cli.commands.get("setup")
    if isinstance(setup, click.Group):
        setup.add_command(setup_production_cmd)
        setup.add_command(setup_sudoers_cmd)
