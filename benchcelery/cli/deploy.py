"""Running a bench: ``bench start``, ``bench setup procfile|supervisor|systemd|redis|logrotate``,
``bench create-rq-users`` and ``bench run-redis`` (the Procfile's Redis line)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import click

from benchcelery.cli.base import CliContext, pass_ctx, usage_error


@click.command("start")
@click.option(
    "-p",
    "--procfile",
    type=click.Path(dir_okay=False, exists=True),
    help="Procfile to run (default: <bench>/Procfile).",
)
@click.option("--no-prefix", is_flag=True, help="Print process output without the name/time prefix.")
@click.option(
    "--stop-timeout",
    type=click.FloatRange(min=0),
    help="Seconds to wait for running jobs on stop before killing (default: the longest queue's stop wait, "
    "timeout + 60, at most 600 in development).",
)
@click.option(
    "-c",
    "--concurrency",
    metavar="NAME=N,...",
    help="Run N copies of a Procfile process (honcho's and Frappe's -c), e.g. worker=2; 0 leaves it out.",
)
@click.option("--no-dev", is_flag=True, help="Accepted for Frappe's scripts: there is no development web server here.")
@click.option("-m", "--man", metavar="NAME", help="Accepted for Frappe's scripts: bench start is its own manager.")
@pass_ctx
def start_cmd(
    obj: CliContext,
    procfile: str | None,
    no_prefix: bool,
    stop_timeout: float | None,
    concurrency: str | None,
    no_dev: bool,
    man: str | None,
) -> None:
    """Run the bench's Procfile in the foreground: queue Redis, scheduler, workers.

    Ctrl-C (or TERM) stops everything: workers finish their running job first (press Ctrl-C
    again to kill them), Redis stops last. `bench restart` (from another terminal) restarts the
    scheduler and workers in place (SIGUSR1), e.g. after changing an app's code.
    """
    from benchcelery.bench.config import Settings
    from benchcelery.deploy.plan import dev_stop_timeout, make_plan
    from benchcelery.deploy.procman import start
    from benchcelery.deploy.startopts import concurrency_procfile

    if no_dev:
        click.echo("--no-dev: nothing to change here (benchcelery runs no development web server)", err=True)
    if man:
        click.echo(f"--man {man}: ignored (bench start is the process manager here)", err=True)
    path = Path(procfile) if procfile else obj.bench.root / "Procfile"
    if concurrency:
        path = concurrency_procfile(obj.bench, path, concurrency)
    if stop_timeout is None:
        stop_timeout = dev_stop_timeout(make_plan(Settings.from_bench(obj.bench)))
    sys.exit(start(obj.bench, path, prefix=not no_prefix, stop_timeout=stop_timeout))


@click.command("run-redis")
@pass_ctx
def run_redis_cmd(obj: CliContext) -> None:
    """Run the bench's queue Redis with config/redis_queue.conf in the foreground (used by the Procfile).

    The binary is redis-server or valkey-server from PATH, else the embedded one. When the port
    already answers, it stands by until stopped instead.
    """
    from benchcelery.deploy.queue_redis import run_redis

    run_redis(obj.bench)


def _setup_options(production: bool) -> Callable[[Callable[..., None]], Callable[..., None]]:
    def decorate(f: Callable[..., None]) -> Callable[..., None]:
        f = click.option("--dry-run", is_flag=True, help="Print the file(s) instead of writing them.")(f)
        f = click.option(
            "--yes",
            "-y",
            is_flag=True,
            help="Overwrite files that differ (without it: ask on a terminal, else refuse).",
        )(f)
        if production:
            f = click.option(
                "--skip-supervisord",
                is_flag=True,
                hidden=True,
                help="Accepted for Frappe's scripts: supervisord.conf is never changed here.",
            )(f)
            f = click.option("--user", help="User the processes run as (default: the current user).")(f)
            f = click.option("--skip-redis", is_flag=True, help="Leave the queue Redis out (managed elsewhere).")(f)
            f = click.option(
                "--workers-only", is_flag=True, help="Only the workers: for a worker host (no scheduler, relay, Redis)."
            )(f)
        return f

    return decorate


def _emit(obj: CliContext, files: dict[Path, str], yes: bool, dry_run: bool) -> list[Path]:
    from benchcelery.deploy.files import write_files

    if dry_run:
        for path, text in files.items():
            if len(files) > 1:
                click.echo(f"# ---- {_rel(obj, path)} ----")
            click.echo(text, nl=not text.endswith("\n"))
        return []

    def ask(path: Path) -> bool:
        if yes:
            return True
        if not sys.stdin.isatty():
            return False
        return click.confirm(f"{_rel(obj, path)} exists and differs. Overwrite it?", default=False)

    written = write_files(files, overwrite=ask)
    for path in written:
        click.echo(f"Wrote {_rel(obj, path)}")
    return written


def _realtime_hint(obj: CliContext) -> None:
    from benchcelery.deploy.plan import make_plan

    if not make_plan(_settings(obj)).realtime:
        click.echo(
            "The realtime relay is off; to add `bench realtime`: bench set-config -g realtime 1, then run this again"
        )


def _warn_user(user: str | None) -> None:
    """Running the programs as root, or as a user this machine does not have: say so (stderr)."""
    from benchcelery.deploy.files import default_user
    from benchcelery.deploy.production import user_warnings

    for line in user_warnings(user or default_user()):
        click.secho(line, fg="yellow", err=True)


def _rel(obj: CliContext, path: Path) -> str:
    try:
        return str(path.relative_to(obj.bench.root))
    except ValueError:
        return str(path)


def _settings(obj: CliContext):  # type: ignore[no-untyped-def]
    from benchcelery.bench.config import Settings

    return Settings.from_bench(obj.bench)


@click.group("setup")
def setup_group() -> None:
    """Write the bench's run files: Procfile, supervisor, systemd, Redis config."""


@setup_group.command("procfile")
@_setup_options(production=False)
@pass_ctx
def setup_procfile(obj: CliContext, yes: bool, dry_run: bool) -> None:
    """Write <bench>/Procfile for `bench start`."""
    from benchcelery.deploy.files import render_procfile

    if _emit(obj, render_procfile(_settings(obj)), yes, dry_run):
        _realtime_hint(obj)


@setup_group.command("redis")
@_setup_options(production=False)
@click.option("--nodes", metavar="HOST:PORT,...", help="Sentinel layout: the queue Redis nodes (node 1 = master).")
@pass_ctx
def setup_redis(obj: CliContext, yes: bool, dry_run: bool, nodes: str | None) -> None:
    """Write config/redis_queue.conf (AOF everysec, noeviction, 127.0.0.1, ACL file when present);
    with a sentinel:// redis_queue, config/sentinel/: a Redis and a sentinel config per host."""
    from benchcelery.bench.redis_url import is_sentinel_url
    from benchcelery.deploy.files import render_redis
    from benchcelery.deploy.sentinel_files import parse_nodes, render_sentinel_layout

    settings = _settings(obj)
    if is_sentinel_url(settings.redis_url):
        _emit(obj, render_sentinel_layout(settings, parse_nodes(nodes) if nodes else None), yes, dry_run)
        return
    _emit(obj, render_redis(settings), yes, dry_run)


@setup_group.command("supervisor")
@_setup_options(production=True)
@pass_ctx
def setup_supervisor(
    obj: CliContext,
    workers_only: bool,
    skip_redis: bool,
    user: str | None,
    skip_supervisord: bool,
    yes: bool,
    dry_run: bool,
) -> None:
    """Write config/supervisor.conf: scheduler, one program per queue, the queue Redis.
    Then `sudo bench setup production USER` links it into supervisor and reloads."""
    from benchcelery.deploy.files import render_redis, render_supervisor

    if skip_supervisord:
        click.echo("--skip-supervisord: nothing to skip (supervisord.conf is never changed here)", err=True)
    settings = _settings(obj)
    files = render_supervisor(settings, user=user, skip_redis=skip_redis, workers_only=workers_only)
    if not dry_run and not skip_redis and not workers_only:
        files = {**{p: t for p, t in render_redis(settings).items() if not p.exists()}, **files}
    written = _emit(obj, files, yes, dry_run)
    _warn_user(user)  # after the files: an error stays the only line
    if written:
        _realtime_hint(obj)
        click.echo(
            "Link it into supervisor and reload: sudo bench setup production USER "
            "(restart after a deploy: bench restart)"
        )


@setup_group.command("systemd")
@_setup_options(production=True)
@click.option("--create-symlinks", is_flag=True, help="Link config/systemd/* into /etc/systemd/system, daemon-reload.")
@click.option("--delete-symlinks", is_flag=True, help="Remove those links, daemon-reload.")
@click.option("--stop", is_flag=True, help="Stop the targets <bench>.target requires.")
@pass_ctx
def setup_systemd(
    obj: CliContext,
    workers_only: bool,
    skip_redis: bool,
    user: str | None,
    skip_supervisord: bool,
    yes: bool,
    dry_run: bool,
    create_symlinks: bool,
    delete_symlinks: bool,
    stop: bool,
) -> None:
    """Write config/systemd/: a target per group and template units per queue (@1..@N).

    With --create-symlinks / --delete-symlinks / --stop it writes nothing and does only that
    (as Frappe's); /etc is under $BENCH_SYSTEM_ROOT when set (systemctl is then skipped).
    """
    from benchcelery.deploy.files import render_redis, render_systemd
    from benchcelery.deploy.plan import safe_name

    if create_symlinks + delete_symlinks + stop > 1:
        raise usage_error("--create-symlinks, --delete-symlinks and --stop exclude each other")
    if create_symlinks or delete_symlinks or stop:
        from benchcelery.deploy import production

        if create_symlinks:
            steps = production.create_symlinks_steps(obj.bench, replace=yes)
        elif delete_symlinks:
            steps = production.delete_symlinks_steps(obj.bench)
        else:
            steps = production.stop_steps(obj.bench)
        production.run_steps(steps, dry_run, click.echo)
        return
    settings = _settings(obj)
    files = render_systemd(settings, user=user, skip_redis=skip_redis, workers_only=workers_only)
    if not dry_run and not skip_redis and not workers_only:
        files = {**{p: t for p, t in render_redis(settings).items() if not p.exists()}, **files}
    written = _emit(obj, files, yes, dry_run)
    _warn_user(user)
    if written:
        _realtime_hint(obj)
        click.echo(
            "Install: sudo bench setup systemd --create-symlinks "
            f"&& sudo systemctl enable --now {safe_name(obj.bench.name)}.target"
        )


@setup_group.command("logrotate")
@_setup_options(production=False)
@pass_ctx
def setup_logrotate(obj: CliContext, yes: bool, dry_run: bool) -> None:
    """Write config/logrotate.conf (copytruncate).

    It rotates logs/*.log and sites/*/logs/*.log daily; link it into /etc/logrotate.d."""
    from benchcelery.deploy.logrotate import render_logrotate

    files = render_logrotate(obj.bench)
    if _emit(obj, files, yes, dry_run):
        conf = next(iter(files))
        click.echo(f'Install it: sudo ln -sf "{conf}" /etc/logrotate.d/bench-{obj.bench.name}')


@click.command("create-rq-users")
@click.option("--set-admin-password", is_flag=True, help="Give the admin (default) user a random password.")
@click.option("--use-rq-auth", is_flag=True, help="Make workers and clients authenticate as the bench user.")
@pass_ctx
def create_rq_users_cmd(obj: CliContext, set_admin_password: bool, use_rq_auth: bool) -> None:
    """Write config/redis_queue.acl (admin + a bench user limited to this bench's keys) and store
    the credentials in common_site_config.json."""
    from benchcelery.deploy.acl import create_rq_users

    users = create_rq_users(_settings(obj), set_admin_password=set_admin_password, use_rq_auth=use_rq_auth)
    click.secho(
        "* ACL and site configs are updated with new user credentials. "
        "Please restart Redis Queue server to enable namespaces.",
        fg="green",
    )
    if users.sentinel:
        click.echo("Sentinel: run `bench setup redis` again and copy config/redis_queue.acl to every node.")
    if users.admin_password:
        click.secho(
            "* Redis admin password is successfully set up. Include below line in .bashrc file for system to use",
            fg="green",
        )
        # Frappe's spelling (Frappe reads it; so does benchcelery, and RQ_ADMIN_PASSWORD too).
        click.echo(f"export RQ_ADMIN_PASWORD={users.admin_password}")
        click.secho(
            "NOTE: Please save the admin password as you can not access redis server without the password",
            fg="yellow",
        )


def register(cli: click.Group) -> None:
    for command in (start_cmd, run_redis_cmd, setup_group, create_rq_users_cmd):
        cli.add_command(command)
