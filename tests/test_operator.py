"""An operator's first day: the demo's commands can be pasted, its last hint works, `bench console`
shows clean tracebacks, usage errors exit 2, every command's help has an example.
Real processes (the installed entry point) and click's CliRunner; the session Redis.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from benchcelery.store.server import free_port
from tests.conftest import BENCH_BIN, BenchHandle, resolve_program


def test_demo_prints_pasteable_commands_and_a_working_hint(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "benchcelery.demo", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "Traceback" not in out and "SecurityWarning" not in out + result.stderr
    assert "jobs_demo.tasks.fail failed, as intended: RuntimeError: this job fails on purpose" in out
    # Every command shown parses back to the arguments that were run (pasting it works).
    shown = [line[2:].split("    # ")[0] for line in out.splitlines() if line.startswith("$ bench ")]
    kwargs = [shlex.split(cmd) for cmd in shown if "--kwargs" in cmd]
    assert kwargs and kwargs[0][-2:] == ["--kwargs", '{"message": "job 1", "label": "short"}']
    # The closing hint names a bench that exists, with the directory quoted for the shell.
    hint = out.strip().splitlines()[-2].split("start it for real with: ", 1)[1]
    words = shlex.split(hint)
    assert words[:2] == ["cd", str(tmp_path / "demo")] and words[3:] == [BENCH_BIN, "start"]
    assert Path(words[3]).is_file()


def test_console_shows_a_clean_traceback(bench: BenchHandle) -> None:
    session = "print('site is', site)\n1/0\nprint('still here')\n"
    result = bench.run("--site", "site1.local", "console", input=session, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "site is site1.local" in result.stdout and "still here" in result.stdout
    assert "ZeroDivisionError: division by zero" in result.stderr
    assert "IPython" not in result.stderr and "During handling" not in result.stderr
    assert result.stderr.count("Traceback (most recent call last)") == 1


USAGE_ERRORS = [
    (["jobs", "retry"], "Give a JOB_ID or --all"),
    (["jobs", "retry", "--all", "--queue", "nosuch"], "Invalid value for '--queue': Queue should be one of"),
    (["enqueue", "testapp.tasks.noop", "--kwargs", "{bad"], "Invalid value for '--kwargs': must be a JSON object"),
    (["enqueue", "testapp.tasks.noop", "--kwargs", "[1]"], "Invalid value for '--kwargs': must be a JSON object"),
    (["enqueue", "testapp.tasks.noop", "--queue", "nosuch"], "Invalid value for '--queue'"),
    (["purge-jobs", "--queue", "nosuch"], "Invalid value for '--queue': Queue should be one of short, default, long"),
    (["worker", "--queue", "nosuch"], "Invalid value for '--queue': Queue should be one of short, default, long"),
    (["worker-pool", "--queue", "short,nosuch"], "Invalid value for '--queue'"),
    (["jobs", "list", "--queue", "nosuch"], "Invalid value for '--queue'"),
    (["jobs", "show"], "Missing argument 'JOB_ID'"),
    (["purge-jobs", "--event", " "], "Invalid value for '--event': must be a non-empty event tag"),
    (["publish-realtime", "ev", "--docname", "x"], "--docname needs --doctype"),
    (["nosuch-command"], "No such command"),
]


@pytest.mark.parametrize(("args", "message"), USAGE_ERRORS, ids=[" ".join(a) for a, _ in USAGE_ERRORS])
def test_usage_errors_exit_2_before_touching_anything(bench: BenchHandle, args: list[str], message: str) -> None:
    from benchcelery.cli import cli

    before = bench.redis.dbsize()
    result = CliRunner().invoke(cli, ["--bench", str(bench.root), "--site", "site1.local", *args])
    assert result.exit_code == 2, (result.output, result.exception)
    assert message in result.output
    assert "Traceback" not in result.output
    assert bench.redis.dbsize() == before


def test_usage_error_exit_code_of_the_installed_command(bench: BenchHandle) -> None:
    result = bench.run("--site", "site1.local", "enqueue", "testapp.tasks.noop", "--kwargs", "{bad")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("Error: Invalid value for '--kwargs'")
    assert bench.run("jobs", "retry").returncode == 2


def _commands(group: click.Group, prefix: str = "") -> Iterator[tuple[str, click.Command]]:
    ctx = click.Context(group)
    for name in group.list_commands(ctx):  # the root group imports a command's module on lookup
        command = group.get_command(ctx, name)
        assert command is not None, name
        path = f"{prefix} {name}".strip()
        yield path, command
        if isinstance(command, click.Group):
            yield from _commands(command, path)


def test_every_command_has_a_summary_examples_and_documented_options() -> None:
    from benchcelery.cli import cli
    from benchcelery.cli.help import HELP, SUMMARY_MAX

    commands = dict(_commands(cli))
    assert set(commands) == set(HELP)  # a new command gets its summary and examples in cli/help.py
    runner = CliRunner()
    listing = runner.invoke(cli, ["--help"], terminal_width=80).output
    for path, command in commands.items():
        summary = command.get_short_help_str(SUMMARY_MAX)
        assert summary == HELP[path][0] and "..." not in summary, path
        if " " not in path:  # shown whole in `bench --help`
            assert any(line.split() == [path, *summary.split()] for line in listing.splitlines()), path
        page = runner.invoke(cli, [*path.split(), "--help"], terminal_width=80).output
        examples = page.split("Examples:\n", 1)[1].splitlines()
        commands_shown = [line.strip().removeprefix("sudo ") for line in examples]
        assert examples and all(c.startswith("bench ") for c in commands_shown), (path, page)
        for param in command.params:
            if isinstance(param, click.Option) and not param.hidden:
                assert param.help, (path, param.opts)


def test_help_texts_the_issue_found_misleading() -> None:
    from benchcelery.cli import cli

    runner = CliRunner()
    purge = " ".join(runner.invoke(cli, ["purge-jobs", "--help"]).output.split())
    assert "of the selected site (--site, $BENCH_SITE or default_site" in purge
    setup = " ".join(runner.invoke(cli, ["setup", "supervisor", "--help"]).output.split())
    assert "without it: ask on a terminal, else refuse" in setup
    enqueue = " ".join(runner.invoke(cli, ["enqueue", "--help"]).output.split())
    assert "--queue TEXT short, default, long or a queue of config `workers`." in enqueue


def test_version() -> None:
    result = subprocess.run([BENCH_BIN, "--version"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    assert result.stdout.startswith("benchcelery 0.1.0 (celery 5.7.")


def test_doctor_fail_on_failed_jobs_and_dead_workers(bench: BenchHandle) -> None:
    for site in ("site1.local", "site2.local"):
        bench.set_config(site=site, enable_scheduler=0)
    site = ("--site", "site1.local")
    bench.enqueue("testapp.tasks.fail", queue="short")
    assert bench.run(*site, "worker", "--burst", "--queue", "short").returncode == 0
    bench.redis.zadd(bench.rt().keys.workers, {"ghost@host": 1})  # a worker whose heartbeat lapsed

    assert bench.run(*site, "doctor", "--no-db").returncode == 0  # the documented default: shown, not counted
    result = bench.run(*site, "doctor", "--no-db", "--fail-on", "failed,dead-workers")
    assert result.returncode == 1, result.stdout
    assert "  - site1.local: 1 failed job (bench --site site1.local jobs list --state failed)" in result.stdout
    assert "  - 1 worker gone: ghost@host" in result.stdout
    assert bench.run(*site, "doctor", "--no-db", "--fail-on", "failed=2").returncode == 0  # under the threshold

    bench.set_config(doctor_fail_on="failed")  # the cron check's setting, for every doctor run
    data = json.loads(bench.run(*site, "doctor", "--no-db", "-f", "json").stdout)
    assert data["healthy"] is False and data["problems"] == [
        "site1.local: 1 failed job (bench --site site1.local jobs list --state failed)"
    ]
    assert bench.run(*site, "doctor", "--no-db", "--fail-on", "").returncode == 0  # the flag wins

    bad = bench.run(*site, "doctor", "--fail-on", "failures")
    assert bad.returncode == 2 and "Invalid value for '--fail-on': unknown item 'failures'" in bad.stderr


def test_deploy_files_run_the_realtime_relay_and_bounded_stop_waits(bench: BenchHandle) -> None:
    off = bench.run("setup", "procfile", "--yes")
    assert "The realtime relay is off; to add `bench realtime`: bench set-config -g realtime 1" in off.stdout
    assert "realtime:" not in (bench.root / "Procfile").read_text()

    bench.set_config(realtime=1, workers={"long": {"stop_timeout": 7300}})
    name, realtime = bench.root.name, resolve_program(f"{BENCH_BIN} realtime")  # .venv may be a symlink
    assert bench.run("setup", "procfile", "--yes").returncode == 0
    assert "\nrealtime: bench realtime\n" in (bench.root / "Procfile").read_text()
    supervisor = bench.run("setup", "supervisor", "--yes")
    assert supervisor.returncode == 0 and "realtime relay is off" not in supervisor.stdout
    text = (bench.root / "config" / "supervisor.conf").read_text()
    commands = [resolve_program(line.split("=", 1)[1]) for line in text.splitlines() if line.startswith("command=")]
    assert f"[program:{name}-realtime]\n" in text and realtime in commands
    stop_waits = {
        block.split("]", 1)[0]: line.split("=", 1)[1]
        for block in text.split("[program:")[1:]
        for line in block.splitlines()
        if line.startswith("stopwaitsecs=")
    }
    assert stop_waits[f"{name}-short-worker"] == "360"  # timeout 300 + 60, as Frappe
    assert stop_waits[f"{name}-default-worker"] == "1860"  # timeout 1800 + 60
    assert stop_waits[f"{name}-long-worker"] == "7300"  # workers.long.stop_timeout
    assert bench.run("setup", "systemd", "--yes").returncode == 0
    units = bench.root / "config" / "systemd"
    unit = (units / f"{name}-realtime.service").read_text()
    assert realtime in [
        resolve_program(line.split("=", 1)[1]) for line in unit.splitlines() if line.startswith("ExecStart=")
    ]
    assert f"{name}-realtime.service" in (units / f"{name}-web.target").read_text()  # the web target


def _columns(line: str) -> list[int]:
    """Where each column of an aligned row starts."""
    return [i for i, ch in enumerate(line) if ch != " " and (i == 0 or line[i - 1 : i + 1].startswith("  "))]


def test_output_reads_right(bench: BenchHandle) -> None:
    site = ("--site", "site1.local")
    # jobs list: a header row, aligned columns
    bench.enqueue("testapp.tasks.fail", queue="short")
    bench.enqueue("testapp.tasks.fail", queue="default", message="longer message")
    bench.enqueue("testapp.tasks.noop", queue="long", job_id="kept")
    assert bench.run(*site, "worker", "--burst").returncode == 0
    listed = bench.run(*site, "jobs", "list").stdout.splitlines()
    assert listed[0].split() == ["STATE", "QUEUE", "ID", "METHOD", "SINCE", "EXCEPTION"]
    assert len(listed) == 3 and all(_columns(row)[:4] == _columns(listed[0])[:4] for row in listed[1:])

    # jobs show: the full id enqueue printed needs no --site; a finished job with an id says so
    shown = bench.run("jobs", "show", "site1.local::kept")
    assert shown.returncode == 0, shown.stderr
    assert "state: finished" in shown.stdout
    gone = bench.run(*site, "jobs", "show", "nope")
    assert gone.returncode == 1 and gone.stderr.startswith("No job site1.local::nope waiting, running or failed")

    # plurals, and purge says which site
    assert bench.run(*site, "jobs", "retry", "--all", "--queue", "short").stdout.strip() == "Retried 1 job"
    purged = bench.run(*site, "purge-jobs").stdout.strip()
    assert purged == "Purged 2 jobs of site site1.local (1 pending, 1 failed)"

    # scheduler status -v: aligned rows under a header; a disabled site says why in plain words
    assert bench.run(*site, "disable-scheduler").stdout.strip() == "Disabled for site1.local"  # Frappe's words
    status = bench.run(*site, "scheduler", "status", "-v").stdout
    assert "Inactive: enable_scheduler is off (bench enable-scheduler turns it on)" in status
    assert "UNSET" not in status
    rows = status.split("(times in UTC)\n", 1)[1].splitlines()
    header = rows[0]
    assert header.split() == ["EVENT", "METHOD", "QUEUE", "LAST", "RUN", "NEXT", "RUN", "LAST", "OUTCOME"]
    jobs = [r for r in rows[1:] if r.startswith("  ") and not r.startswith("  -")]
    assert len(jobs) >= 2
    assert all(_columns(row)[:3] == _columns(header)[:3] for row in jobs)


def test_unreachable_redis_is_one_common_line_for_every_command(bench: BenchHandle) -> None:
    env = bench.env(BENCH_REDIS_QUEUE=f"redis://127.0.0.1:{free_port()}")
    lines = set()
    for args in (["enqueue", "testapp.tasks.noop"], ["show-pending-jobs"], ["jobs", "list"]):
        result = bench.run("--site", "site1.local", *args, env=env)
        assert result.returncode == 69, (args, result.stderr)
        lines.add(result.stderr.strip())
    assert len(lines) == 1
    hint = "(the address comes from $BENCH_REDIS_QUEUE: check it)"
    assert lines.pop().endswith(f"is unreachable: connection refused {hint}")


def test_bench_help_lists_every_command_without_importing_their_families() -> None:
    """`bench --help` reads the summaries from cli/help.py: no command family is imported, and the
    listing is the one the loaded commands give."""
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from benchcelery.cli import cli, load_all\n"
        "lazy = CliRunner().invoke(cli, ['--help'], terminal_width=80).output\n"
        "families = sorted(m for m in sys.modules if m.startswith('benchcelery.cli.') and m not in "
        "('benchcelery.cli.base', 'benchcelery.cli.help'))\n"
        "load_all()\n"
        "loaded = CliRunner().invoke(cli, ['--help'], terminal_width=80).output\n"
        "print(families, lazy == loaded, len(lazy.splitlines()))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "[]" and out[1] == "True" and int(out[2]) > 30, out
