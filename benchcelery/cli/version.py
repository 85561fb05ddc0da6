"""``bench version [-f plain|table|json]``: versions of the engine, the queue Redis and the bench's apps."""

from __future__ import annotations

import contextlib
import importlib
from typing import Any

import click

from benchcelery.cli.base import CliContext, echo_json, pass_ctx, table
from benchcelery.errors import BenchError

ENGINE = ("benchcelery", "celery", "kombu", "celery-redbeat", "redis")
REDIS_PROBE_TIMEOUT = 2.0  # seconds: a version listing must not hang on a dead Redis


def _dist_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def app_version(app: str) -> str | None:
    """The app's ``__version__`` (as Frappe reads it), else its installed distribution's version."""
    with contextlib.suppress(Exception):  # an app that fails to import still gets listed
        module = importlib.import_module(app)
        value = getattr(module, "__version__", None)
        if value:
            return str(value)
    return _dist_version(app) or _dist_version(app.replace("_", "-"))


def redis_server_version(obj: CliContext) -> str | None:
    """The queue Redis's version (INFO server), None when it cannot be asked."""
    try:
        from benchcelery.bench.config import Settings
        from benchcelery.store.connection import make_client

        client = make_client(
            Settings.from_bench(obj.bench),
            socket_timeout=REDIS_PROBE_TIMEOUT,
            socket_connect_timeout=REDIS_PROBE_TIMEOUT,
        )
        info = client.info("server")
    except Exception:
        return None
    name = "valkey" if info.get("valkey_version") else "redis"
    return f"{info.get('redis_version')}" if name == "redis" else f"valkey {info.get('valkey_version')}"


def collect_versions(obj: CliContext) -> list[dict[str, Any]]:
    """Rows ``{"name", "version", "kind"}``: engine packages, the Redis server when reachable, the
    bench's apps (sites/apps.txt) when run inside a bench."""
    rows: list[dict[str, Any]] = [
        {"name": "redis-py" if n == "redis" else n, "version": _dist_version(n), "kind": "engine"} for n in ENGINE
    ]
    try:
        bench = obj.bench
    except BenchError:
        return rows
    server = redis_server_version(obj)
    if server:
        rows.append({"name": "redis-server", "version": server, "kind": "server"})
    bench.activate()
    rows += [{"name": app, "version": app_version(app), "kind": "app"} for app in bench.apps()]
    return rows


@click.command("version")
@click.option(
    "-f",
    "--format",
    "fmt",
    type=click.Choice(["plain", "table", "json", "legacy"]),
    default="plain",
    show_default=True,
    help="plain: `name version` lines (legacy: the same, Frappe's name for it); json: a list of "
    '{"name", "version", "kind"} (kind: engine, server, app).',
)
@pass_ctx
def version_cmd(obj: CliContext, fmt: str) -> None:
    """Versions of benchcelery, Celery, kombu, RedBeat, redis-py, the queue Redis server (when
    reachable) and each installed app (its __version__, else its package's version)."""
    rows = collect_versions(obj)
    if fmt == "json":
        echo_json(rows)
        return
    cells = [(r["name"], r["version"] or "?", r["kind"]) for r in rows]
    if fmt == "table":
        for line in table(("NAME", "VERSION", "KIND"), cells):
            click.echo(line)
        return
    for name, version, _ in cells:
        click.echo(f"{name} {version}")


def register(cli: click.Group) -> None:
    cli.add_command(version_cmd)
