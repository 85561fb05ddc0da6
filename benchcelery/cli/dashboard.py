"""``bench dashboard``: the web dashboard, and ``bench dashboard token`` for its logins."""

from __future__ import annotations

import logging
import sys

import click

from benchcelery.bench.config import DEFAULTS
from benchcelery.cli.base import CliContext, echo_json, format_option, pass_ctx
from benchcelery.errors import BenchError

DEFAULT_HOST = DEFAULTS["dashboard_host"]


@click.group("dashboard", invoke_without_command=True)
@click.option("--port", type=click.IntRange(1, 65535), help="Port to listen on (default: config dashboard_port, 9030).")
@click.option("--host", help=f"Address to listen on (default: config dashboard_host, else {DEFAULT_HOST}).")
@click.option("--read-only", is_flag=True, help="Show everything, change nothing (also: config dashboard_read_only).")
@click.pass_context
def dashboard_group(ctx: click.Context, port: int | None, host: str | None, read_only: bool) -> None:
    """Serve a web page of the bench's sites, queues, failed jobs, workers and scheduler.

    \b
    Log in with a token from `bench dashboard token --user NAME`. Listening on
    anything but a loopback address is refused until such a login exists.
    """
    if ctx.invoked_subcommand is not None:
        return
    obj = ctx.ensure_object(CliContext)
    try:
        import jinja2  # noqa: F401 - starlette imports it only when templates are first used
        import python_multipart  # noqa: F401 - needed to read form posts
        import uvicorn  # noqa: F401

        from benchcelery.dashboard.app import create_app  # noqa: F401 - starlette
        from benchcelery.dashboard.server import ServeOptions, serve
    except ImportError as exc:
        raise BenchError(
            f"bench dashboard needs the dashboard extra ({exc.name} is missing): pip install 'benchcelery[dashboard]'"
        ) from None
    from benchcelery.scheduler.state import truthy

    rt = obj.runtime()
    settings = rt.settings
    logging.basicConfig(  # stdout: the action log lands in logs/dashboard.log under supervisor/systemd
        stream=sys.stdout,
        level=logging.DEBUG if obj.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for name in ("redis", "asyncio", "multipart", "python_multipart"):
        logging.getLogger(name).setLevel(logging.WARNING)
    options = ServeOptions(
        host=host or str(settings.get("dashboard_host") or DEFAULT_HOST),
        port=port or settings.number("dashboard_port"),
        read_only=read_only or truthy(settings.get("dashboard_read_only", DEFAULTS["dashboard_read_only"])),
        log_level="debug" if obj.verbose else "info",
    )
    serve(rt, options)


@dashboard_group.command("token")
@click.option("--user", required=True, help="The user the token names (shown in the page and in the action log).")
@click.option("--read-only", is_flag=True, help="This login may look but not act.")
@format_option
@pass_ctx
def token_cmd(obj: CliContext, user: str, read_only: bool, fmt: str) -> None:
    """Print a login token for the dashboard (valid dashboard_token_max_age seconds, default 30 days).

    Removing dashboard_secret from common_site_config.json revokes every token.
    """
    from benchcelery.dashboard.auth import make_token

    token = make_token(obj.bench, user, read_only=read_only)
    if fmt == "json":
        echo_json({"user": token.user, "read_only": token.read_only, "token": token.token, "max_age": token.max_age})
    else:
        click.echo(token.token)


def register(cli: click.Group) -> None:
    cli.add_command(dashboard_group)
