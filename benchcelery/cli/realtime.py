"""``bench publish-realtime``, ``bench realtime`` (the socket.io relay) and ``bench realtime token``."""

from __future__ import annotations

import json
import logging
from typing import Any

import click

from benchcelery.bench.config import DEFAULTS
from benchcelery.cli.base import CliContext, echo_json, format_option, pass_ctx, usage_error
from benchcelery.errors import BenchError, ValidationError

DEFAULT_HOST = DEFAULTS["socketio_host"]


def parse_message(value: str | None) -> Any:
    """``--message``: JSON when it parses as JSON, else the string itself."""
    if value is None:
        return None
    try:
        return json.loads(value)
    except ValueError:
        return value


@click.command("publish-realtime")
@click.argument("event")
@click.option("--message", help="Event data: JSON, or else sent as a string (default: {}).")
@click.option("--room", help="Socket.io room: user:<user>, doc:<doctype>/<name>, doctype:<doctype>, all.")
@click.option("--user", help="Send to this user's room (user:<user>).")
@click.option("--doctype", help="Document type: room doctype:<dt> (doc:<dt>/<docname> with --docname).")
@click.option("--docname", help="Document name (with --doctype).")
@click.option(
    "--after-commit",
    metavar="TEXT",
    help="Any non-empty value: hold until the job succeeded (sent at once from the command line).",
)
@format_option
@pass_ctx
def publish_realtime_cmd(
    obj: CliContext,
    event: str,
    message: str | None,
    room: str | None,
    user: str | None,
    doctype: str | None,
    docname: str | None,
    after_commit: str | None,
    fmt: str,
) -> None:
    """Publish realtime EVENT to the site's socket.io clients (through `bench realtime`).

    Prints how many relay servers received it (0: none is running).
    """
    from benchcelery.realtime import publish_realtime

    if docname and not doctype:
        raise usage_error("--docname needs --doctype")
    sites = obj.sites()
    obj.runtime()
    data = parse_message(message)
    results = [
        publish_realtime(event, data, room, user, doctype, docname, bool(after_commit), site=site) for site in sites
    ]
    if fmt == "json":
        echo_json(
            [
                {
                    "site": r.event.namespace,
                    "event": r.event.event,
                    "room": r.event.room,
                    "message": r.event.message,
                    "receivers": r.receivers,
                }
                for r in results
            ]
        )
        return
    for r in results:
        count = r.receivers or 0
        line = (
            f"Published {r.event.event} to room {r.event.room} of {r.event.namespace}: "
            f"received by {count} subscriber{'' if count == 1 else 's'}"
        )
        if not count:
            line += " (is `bench realtime` running?)"
        click.echo(line)


@click.group("realtime", invoke_without_command=True)
@click.option("--port", type=click.IntRange(1, 65535), help="Port to listen on (default: config socketio_port, 9000).")
@click.option("--host", help=f"Address to listen on (default: config socketio_host, else {DEFAULT_HOST}).")
@click.pass_context
def realtime_group(ctx: click.Context, port: int | None, host: str | None) -> None:
    """Run the socket.io server relaying realtime events to browsers (all sites of the bench).

    \b
    Clients connect to the namespace /<site> with the auth payload {"token": TOKEN};
    `bench --site SITE realtime token --user USER` prints a token.
    """
    if ctx.invoked_subcommand is not None:
        return
    obj = ctx.ensure_object(CliContext)
    if obj.site_option:
        obj.sites()  # accepted for symmetry; the server serves every site, but the name must exist
    try:
        from benchcelery.realtime.server import ServeOptions, serve
    except ImportError as exc:
        raise BenchError(
            f"bench realtime needs the realtime extra ({exc.name} is missing): pip install 'benchcelery[realtime]'"
        ) from None
    settings = obj.runtime().settings
    cors = settings.get("realtime_cors_allowed_origins", DEFAULTS["realtime_cors_allowed_origins"])
    if not (cors == "*" or (isinstance(cors, list) and all(isinstance(o, str) for o in cors))):
        raise ValidationError('Config key realtime_cors_allowed_origins must be "*" or a list of origins')
    logging.basicConfig(
        level=logging.DEBUG if obj.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # These libraries log every packet / connection detail at INFO or DEBUG; keep their warnings.
    for name in ("socketio", "engineio", "redis", "asyncio"):
        logging.getLogger(name).setLevel(logging.WARNING)
    options = ServeOptions(
        host=host or str(settings.get("socketio_host") or DEFAULT_HOST),
        port=port or settings.number("socketio_port"),
        cors_allowed_origins=cors,
        log_level="debug" if obj.verbose else "info",
    )
    serve(settings, options)


@realtime_group.command("token")
@click.option("--user", required=True, help="The user the token names.")
@format_option
@pass_ctx
def token_cmd(obj: CliContext, user: str, fmt: str) -> None:
    """Print a token a socket.io client sends as {"token": ...} to connect to /<site>."""
    from benchcelery.realtime.tokens import make_token

    sites = obj.sites()
    if len(sites) != 1:
        raise usage_error("A realtime token is for one site: use --site SITE")
    token = make_token(obj.bench, sites[0], user)
    if fmt == "json":
        echo_json({"site": token.site, "user": token.user, "token": token.token, "max_age": token.max_age})
    else:
        click.echo(token.token)


def register(cli: click.Group) -> None:
    cli.add_command(publish_realtime_cmd)
    cli.add_command(realtime_group)
