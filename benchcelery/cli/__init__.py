"""The ``bench`` command: one root group; each command family registers itself from its module.

Exit codes: 0 ok (also "nothing to do"), 1 failure, 2 usage error, 69 Redis unreachable.
"""

from __future__ import annotations

import importlib
import sys

import click

from benchcelery.cli import help
from benchcelery.cli.base import BenchGroup, CliContext
from benchcelery.util import boot

# Each command family registers its commands from its module (``register(cli)``), imported when
# one of its commands is first looked up: ``bench worker`` imports the worker's family only (a
# worker's start-up and memory), ``bench --help`` every family.
FAMILY_COMMANDS: dict[str, tuple[str, ...]] = {
    "site": (
        "init",
        "new-app",
        "new-site",
        "set-config",
        "set-redis-cache-host",
        "set-redis-queue-host",
        "show-config",
        "use",
    ),
    "worker": ("worker", "worker-pool"),
    "enqueue": ("console", "enqueue"),
    "scheduler": (
        "disable-scheduler",
        "enable-scheduler",
        "schedule",
        "scheduler",
        "set-maintenance-mode",
        "trigger-scheduler-event",
    ),
    "diagnostics": ("doctor", "purge-jobs", "ready-for-migration", "show-pending-jobs"),
    "jobs": ("jobs",),
    "queue": ("queue",),
    "deploy": ("create-rq-users", "run-redis", "setup", "start"),
    "realtime": ("publish-realtime", "realtime"),
    "dashboard": ("dashboard",),
    "monitor": ("flower", "metrics"),
    "execute": ("execute",),
    "version": ("version",),
    "production": ("disable-production", "restart", "setup"),  # adds to deploy's `setup` group
}
FAMILIES = tuple(FAMILY_COMMANDS)
_AFTER = {"production": "deploy"}  # a family registered only once this one is
# command -> the families that register (part of) it
COMMANDS: dict[str, tuple[str, ...]] = {}
for _family, _names in FAMILY_COMMANDS.items():
    for _name in _names:
        COMMANDS[_name] = (*COMMANDS.get(_name, ()), _family)
_loaded: set[str] = set()


class LazyBenchGroup(BenchGroup):
    """The root group: a command's family is imported (and registered) when the command is looked up."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        for family in COMMANDS.get(cmd_name, ()):
            load(family)
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """``bench --help``'s command list, from help.HELP's summaries (the ones ``help.apply`` gives
        the commands), without importing any family: listing them costs no import
        (tests/test_cli_help.py checks that the list equals the one the loaded commands give)."""
        rows = []
        for name in self.list_commands(ctx):
            if name in self.commands:
                rows.append((name, self.commands[name].get_short_help_str(formatter.width)))
            elif name in help.HELP:
                rows.append((name, help.HELP[name][0]))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def load(family: str) -> None:
    """Register the commands of ``benchcelery/cli/<family>.py`` (once); a family whose module is not
    shipped (a trimmed install) is skipped, so its commands are unknown."""
    if family in _loaded:
        return
    _loaded.add(family)
    if family in _AFTER:
        load(_AFTER[family])
    try:
        module = importlib.import_module(f"benchcelery.cli.{family}")
    except ModuleNotFoundError as exc:
        if exc.name != f"benchcelery.cli.{family}":
            raise
        return
    module.register(cli)
    help.apply(cli)


def load_all() -> None:
    """Every family (``bench --help``, tests that walk every command)."""
    for family in FAMILIES:
        load(family)


def _version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        from benchcelery.cli.help import version_message

        click.echo(version_message())
        ctx.exit()


@click.group(cls=LazyBenchGroup, context_settings={"help_option_names": ["-h", "--help"]})
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
    boot.resume(ctx.invoked_subcommand)  # the command's family is imported: its boot is done
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
    boot.pause()  # no collections while the command's modules load (util/boot.py)
    cli(args=hoist_site(sys.argv[1:]), prog_name="bench")
