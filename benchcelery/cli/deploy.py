"""Running a bench: ``bench start``, ``bench setup procfile|supervisor|systemd|redis|logrotate``,
``bench create-rq-users`` and ``bench run-redis`` (the Procfile's Redis line)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import click

from benchcelery.cli.base import CliContext, pass_ctx


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
    "time limit + 30, at most 600 unless workers.<queue>.stop_timeout).",
)
@pass_ctx
def start_cmd(obj: CliContext, procfile: str | None, no_prefix: bool, stop_timeout: float | None) -> None:
    """Run the bench's Procfile in the foreground: queue Redis, scheduler, workers.

    Ctrl-C (or TERM) stops everything: workers finish their running job first (press Ctrl-C
    again to kill them), Redis stops last.
    """
    from benchcelery.deploy.procman import start

    sys.exit(start(obj.bench, Path(procfile) if procfile else None, prefix=not no_prefix, stop_timeout=stop_timeout))


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
    obj: CliContext, workers_only: bool, skip_redis: bool, user: str | None, yes: bool, dry_run: bool
) -> None:
    """Write config/supervisor.conf: scheduler, one program per queue, the queue Redis."""
    from benchcelery.deploy.files import render_redis, render_supervisor

    settings = _settings(obj)
    files = render_supervisor(settings, user=user, skip_redis=skip_redis, workers_only=workers_only)
    if not dry_run and not skip_redis and not workers_only:
        files = {**{p: t for p, t in render_redis(settings).items() if not p.exists()}, **files}
    if _emit(obj, files, yes, dry_run):
        _realtime_hint(obj)
        conf = obj.bench.config_path / "supervisor.conf"
        click.echo(
            f"Link it into supervisor: sudo ln -s {conf} /etc/supervisor/conf.d/{obj.bench.name}.conf "
            "&& sudo supervisorctl reread && sudo supervisorctl update"
        )


@setup_group.command("systemd")
@_setup_options(production=True)
@pass_ctx
def setup_systemd(
    obj: CliContext, workers_only: bool, skip_redis: bool, user: str | None, yes: bool, dry_run: bool
) -> None:
    """Write config/systemd/: a target per group and template units per queue (@1..@N)."""
    from benchcelery.deploy.files import render_redis, render_systemd
    from benchcelery.deploy.plan import safe_name

    settings = _settings(obj)
    files = render_systemd(settings, user=user, skip_redis=skip_redis, workers_only=workers_only)
    if not dry_run and not skip_redis and not workers_only:
        files = {**{p: t for p, t in render_redis(settings).items() if not p.exists()}, **files}
    if _emit(obj, files, yes, dry_run):
        _realtime_hint(obj)
        click.echo(
            "Install: sudo cp config/systemd/* /etc/systemd/system/ && sudo systemctl daemon-reload "
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
        click.echo(f"export RQ_ADMIN_PASSWORD={users.admin_password}")
        click.secho(
            "NOTE: Please save the admin password as you can not access redis server without the password",
            fg="yellow",
        )


def register(cli: click.Group) -> None:
    for command in (start_cmd, run_redis_cmd, setup_group, create_rq_users_cmd):
        cli.add_command(command)
