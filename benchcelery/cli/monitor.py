"""``bench metrics`` (Prometheus exporter) and ``bench flower`` (Flower for this bench).

Both need the ``monitor`` extra (``pip install 'benchcelery[monitor]'``). ``bench metrics`` never
imports Celery; ``bench flower`` execs Flower on the bench's Celery app (``benchcelery.app``).
"""

from __future__ import annotations

import sys
import time

import click

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
    """Export the bench's job, worker and scheduler figures to Prometheus (read-only)."""
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
        port = int(rt.settings.get("metrics_port") or exporter.DEFAULT_PORT)
    address = address or str(rt.settings.get("metrics_address") or exporter.DEFAULT_ADDRESS)
    try:
        server, _thread = exporter.serve(rt, port, address)
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

    if importlib.util.find_spec("flower") is None:
        raise BenchError(MISSING.format(what="Flower"))
    settings = obj.runtime().settings
    address = address or str(settings.get("flower_address") or "127.0.0.1")
    port = port or int(settings.get("flower_port") or 5555)
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
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWER_")}
    env["BENCH_PATH"] = str(obj.bench.root)
    if auth:
        env["FLOWER_BASIC_AUTH"] = ",".join(auth)  # not on the command line, where `ps` shows it
    else:
        env["FLOWER_UNAUTHENTICATED_API"] = "true"  # loopback only (checked above), like the pages
    argv = [sys.executable, "-m", "celery", "-A", "benchcelery.app", "flower", f"--address={address}", f"--port={port}"]
    return argv, env


@click.command("flower")
@click.option("--port", type=click.IntRange(1, 65535), help="Port (default: config flower_port, 5555).")
@click.option("--address", help="Address to bind (default: config flower_address, 127.0.0.1).")
@pass_ctx
def flower_cmd(obj: CliContext, port: int | None, address: str | None) -> None:
    """Start Flower for this bench (basic auth from config flower_basic_auth)."""
    import os

    argv, env = flower_command(obj, port, address)
    sys.stdout.flush()
    os.execve(argv[0], argv, env)


def register(cli: click.Group) -> None:
    cli.add_command(metrics_cmd)
    cli.add_command(flower_cmd)
