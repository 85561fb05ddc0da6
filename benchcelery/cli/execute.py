"""``bench --site S execute METHOD``: run an app function now and print its return value."""

from __future__ import annotations

import click

from benchcelery.cli.base import CliContext, pass_ctx
from benchcelery.errors import EXIT_FAILURE


@click.command("execute")
@click.argument("method")
@click.option(
    "--args", "args_text", metavar="LIST", help="Positional arguments: a Python literal or JSON, e.g. \"[1, 'a']\"."
)
@click.option(
    "--kwargs", "kwargs_text", metavar="DICT", help="Keyword arguments: a Python literal or JSON, e.g. \"{'x': 1}\"."
)
@click.option("--profile", is_flag=True, help="Profile the call (cProfile) and print the top functions on stderr.")
@pass_ctx
def execute_cmd(obj: CliContext, method: str, args_text: str | None, kwargs_text: str | None, profile: bool) -> None:
    """Run METHOD of one of the bench's apps now, in this process, in the site's context (as a job
    would run), and print its return value as JSON (nothing when it returns None). No worker
    needed, no job recorded. --site all runs it once per site.

    \b
    The enqueue allowlist applies: only functions defined in the bench's apps (or named by
    allowed_methods) run. An exception: its message on one line (the traceback with --verbose),
    exit 1.

    """
    import sys

    from benchcelery.compat.execute import execute, parse_literal, to_json

    args = parse_literal(args_text, list, "--args")
    kwargs = parse_literal(kwargs_text, dict, "--kwargs")
    sites = obj.sites()
    failed = False
    for site in sites:
        outcome = execute(obj.bench, site, method, args, kwargs, profile=profile)
        if outcome.profile:
            click.echo(outcome.profile, err=True)
        prefix = f"{site}: " if len(sites) > 1 else ""
        if not outcome.ok:
            failed = True
            if obj.verbose and outcome.traceback:
                click.echo(outcome.traceback.rstrip(), err=True)
            click.secho(f"{prefix}{outcome.error}".replace("\n", " "), fg="red", err=True)
        elif outcome.value is not None:
            click.echo(f"{prefix}{to_json(outcome.value)}")
    if failed:
        sys.exit(EXIT_FAILURE)


def register(cli: click.Group) -> None:
    cli.add_command(execute_cmd)
