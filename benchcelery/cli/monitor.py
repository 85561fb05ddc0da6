"""``bench metrics`` (Prometheus exporter) and ``bench flower`` (Flower for this bench).

Both need the ``monitor`` extra (``pip install 'benchcelery[monitor]'``). ``bench metrics`` never
imports Celery; ``bench flower`` execs Flower on the bench's Celery app (``benchcelery.app``).
"""

from __future__ import annotations

import sys
import time

import click

from benchcelery.bench.config import DEFAULTS
from benchcelery.cli.base import CliContext, pass_ctx
from benchcelery.errors import BenchError
from benchcelery.util.net import is_loopback

MISSING = "{what} is not installed: pip install 'benchcelery[monitor]'"


@click.command("metrics")
@click.option(
    "--port", type=click.IntRange(0, 65535), help="Port to serve /metrics on (default: config metrics_port, 9808)."
)
@click.option("--address", help="Address to bind (default: config metrics_address, 127.0.0.1).")
@click.option("--once", is_flag=True, help="Print one scrape to stdout and exit.")
@pass_ctx
def metrics_cmd(obj: CliContext, port: int | None, address: str | None, once: bool) -> None:
    """Export the bench's job, worker and scheduler figures to Prometheus (read-only).

    Off loopback it needs metrics_basic_auth (or metrics_allow_public: true in the config)."""
    try:
        from benchcelery.diagnostics import exporter
    except ModuleNotFoundError as exc:
        if exc.name != "prometheus_client":
            raise
        raise BenchError(MISSING.format(what="prometheus-client")) from None
    rt = obj.runtime()
    if once:
        rt.redis  # noqa: B018 - exit 69 with one line when Redis is unreachable
        click.echo(exporter.exposition(rt), nl=False)
        return
    if port is None:
        port = int(rt.settings.get("metrics_port") or DEFAULTS["metrics_port"])
    address = address or str(rt.settings.get("metrics_address") or DEFAULTS["metrics_address"])
    auth = exporter.logins(rt.settings)
    exporter.check_exposure(address, auth, rt.settings.get("metrics_allow_public") is True)
    try:
        server, _thread = exporter.serve(rt, port, address, auth)
    except OSError as exc:
        raise BenchError(f"Cannot listen on {address}:{port}: {exc.strerror or exc}") from None
    click.echo(f"bench metrics: serving http://{address}:{server.server_port}/metrics")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.shutdown()


def _check_listen(address: str, port: int) -> None:
    """One clear line now rather than Flower's traceback after the exec."""
    import socket

    try:
        infos = socket.getaddrinfo(address, port, type=socket.SOCK_STREAM)
        with socket.socket(infos[0][0], socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(infos[0][4])
    except OSError as exc:
        raise BenchError(f"Cannot listen on {address}:{port}: {exc.strerror or exc}") from None


def flower_command(obj: CliContext, port: int | None, address: str | None) -> tuple[list[str], dict[str, str]]:
    """The command line and environment ``bench flower`` execs. Raises BenchError when Flower would
    listen beyond this machine without authentication, or is not installed."""
    import importlib.util
    import os

    from benchcelery.diagnostics import flower

    if importlib.util.find_spec("flower") is None:
        raise BenchError(MISSING.format(what="Flower"))
    settings = obj.runtime().settings
    address = address or str(settings.get("flower_address") or DEFAULTS["flower_address"])
    port = port or int(settings.get("flower_port") or DEFAULTS["flower_port"])
    auth = settings.get("flower_basic_auth") or []
    auth = [auth] if isinstance(auth, str) else [str(a) for a in auth]
    if any(":" not in a for a in auth):
        raise BenchError("flower_basic_auth must be 'user:password' (or a list of them)")
    if not auth and not is_loopback(address):
        raise BenchError(
            f"Refusing to serve Flower on {address} without authentication: set flower_basic_auth "
            "('user:password') in common_site_config.json, or bind to 127.0.0.1"
        )
    _check_listen(address, port)
    if not auth:  # never Flower's unauthenticated API: a login of the bench's own, made once
        login, made = flower.generated_login(obj.bench)
        auth = [login]
        if made:
            click.echo(
                f"bench flower: generated a login for this bench: {login} "
                f"(kept in {obj.bench.relative(flower.auth_file(obj.bench))}, mode 0600; "
                "set flower_basic_auth to choose your own)",
                err=True,
            )
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWER_")}
    env["BENCH_PATH"] = str(obj.bench.root)
    env["FLOWER_BASIC_AUTH"] = ",".join(auth)  # not on the command line, where `ps` shows it
    extra = settings.get("flower_allowed_hosts") or []
    env[flower.HOSTS_ENV] = ",".join(flower.allowed_hosts(address, port, [str(h) for h in extra]))
    argv = [sys.executable, "-m", "benchcelery.diagnostics.flower", "-A", "benchcelery.app", "flower"]
    return [*argv, f"--address={address}", f"--port={port}"], env


@click.command("flower")
@click.option("--port", type=click.IntRange(1, 65535), help="Port (default: config flower_port, 5555).")
@click.option("--address", help="Address to bind (default: config flower_address, 127.0.0.1).")
@pass_ctx
def flower_cmd(obj: CliContext, port: int | None, address: str | None) -> None:
    """Start Flower for this bench (basic auth from config flower_basic_auth, else a generated
    login kept in config/flower_basic_auth; requests for another Host are refused)."""
    import os

    argv, env = flower_command(obj, port, address)
    sys.stdout.flush()
    os.execve(argv[0], argv, env)


def register(cli: click.Group) -> None:
    cli.add_command(metrics_cmd)
    cli.add_command(flower_cmd)
