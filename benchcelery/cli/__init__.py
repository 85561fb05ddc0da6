"""The ``bench`` command: one root group; each command family registers itself from its module.

Exit codes: 0 ok (also "nothing to do"), 1 failure, 2 usage error, 69 Redis unreachable.
"""

from __future__ import annotations

import importlib
import sys

import click

from benchcelery.cli import help
from benchcelery.cli.base import BenchGroup, CliContext

FAMILIES = ("site", "worker", "enqueue")
OPTIONAL_FAMILIES = (
    "scheduler",
    "diagnostics",
    "jobs",
    "deploy",
    "realtime",
    "dashboard",
    "monitor",
    "execute",
    "site_queue",  # bench --site S queue pause|resume (merged with cli/queue.py by the integrator)
    "version",
    "production",
)


def _version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        from benchcelery.cli.help import version_message

        click.echo(version_message())
        ctx.exit()


@click.group(cls=BenchGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--version", is_flag=True, expose_value=False, is_eager=True, callback=_version, help="Show the versions and exit."
)
@click.option("--site", envvar=None, help="Site name, or 'all' (default: $BENCH_SITE, then default_site).")
@click.option(
    "--bench",
    "bench_path",
    type=click.Path(file_okay=False),
    help="Bench directory (default: $BENCH_PATH or the nearest one above the current directory).",
)
@click.option("--verbose", is_flag=True, help="More output.")
@click.option("--profile", is_flag=True, help="Profile the command (cProfile); the top functions go to stderr.")
@click.option("--force", is_flag=True, hidden=True)
@click.pass_context
def cli(
    ctx: click.Context, site: str | None, bench_path: str | None, verbose: bool, profile: bool, force: bool
) -> None:
    """Background jobs, workers and the scheduler of a bench, on Celery + Redis.

    \b
    Exit codes: 0 ok (also "nothing to do"), 1 failure, 2 usage error,
    69 Redis unreachable.

    \b
    Examples:
      bench --site site1.local enqueue myapp.tasks.send_report --queue short
      bench --site all show-pending-jobs
      bench CMD --help     (each command's options and examples)
    """
    ctx.obj = CliContext(site_option=site, bench_option=bench_path, verbose=verbose)
    if profile:
        _start_profile(ctx)


PROFILE_LINES = 30


def _start_profile(ctx: click.Context) -> None:
    """Frappe's ``bench --profile CMD``: profile the command and print the top functions (by
    cumulative time) on stderr when it ends, however it ends."""
    import cProfile
    import io
    import pstats

    profiler = cProfile.Profile()

    def report() -> None:
        profiler.disable()
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(PROFILE_LINES)
        click.echo(out.getvalue(), err=True)

    ctx.call_on_close(report)
    profiler.enable()


def _register() -> None:
    for name in FAMILIES:
        importlib.import_module(f"benchcelery.cli.{name}").register(cli)
    for name in OPTIONAL_FAMILIES:
        try:
            module = importlib.import_module(f"benchcelery.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"benchcelery.cli.{name}":
                raise
            continue
        module.register(cli)


_register()
help.apply(cli)


_GROUP_VALUE_OPTIONS = ("--site", "--bench")


def hoist_site(args: list[str]) -> list[str]:
    """Accept ``--site S`` after the command too (``bench worker --site S``, as in the guide's
    supervisor example and Frappe v15): move it just before the command, after any group-level
    ``--site`` (so the command's one wins)."""
    command = 0
    while command < len(args) and args[command].startswith("-"):
        command += 2 if args[command] in _GROUP_VALUE_OPTIONS else 1
    for i in range(command + 1, len(args)):
        if args[i] == "--site" and i + 1 < len(args):
            return [*args[:command], args[i], args[i + 1], *args[command:i], *args[i + 2 :]]
        if args[i].startswith("--site="):
            return [*args[:command], args[i], *args[command:i], *args[i + 1 :]]
    return args


def main() -> None:
    cli(args=hoist_site(sys.argv[1:]), prog_name="bench")
