"""Issue 22, rows 9, 10, 12 and 13: passwords in URL queries, terminal escapes in job data, deploy
files at hostile paths, and sites that are not directories of the bench. Real Redis, real `bench`
processes and real workers, as in tests/test_security.py.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchcelery.store.server import free_port, start_server, stop_server
from tests.conftest import BenchHandle, burst, make_bench, reset_runtime
from tests.forge import push, valid_message
from tests.test_security import failed_records, one_line_error

QUERY_PW = "QueryPW77"


# --- row 9: a password given as ?password= is masked, and a worker starts with it ---------------------
@pytest.fixture
def password_bench(tmp_path: Path) -> Iterator[BenchHandle]:
    """A bench whose Redis needs a password, given as ``redis_queue: redis://…/6?password=…``."""
    import redis

    port = free_port()
    server = start_server(port, tmp_path / "redis", args=["--requirepass", QUERY_PW])
    url = f"redis://127.0.0.1:{port}/6?password={QUERY_PW}"
    handle = BenchHandle(make_bench(tmp_path / "bench", url), redis.Redis(port=port, db=6, password=QUERY_PW), url)
    try:
        yield handle
    finally:
        handle.stop_all()
        reset_runtime()
        stop_server(server)


def test_query_password_is_masked_and_a_worker_starts_with_it(password_bench: BenchHandle) -> None:
    bench = password_bench
    for args in (("show-config",), ("show-config", "-f", "json"), ("doctor", "--no-db"), ("doctor", "-f", "json")):
        result = bench.run("--site", "site1.local", *args)
        assert "Traceback" not in result.stderr, result.stderr
        assert QUERY_PW not in result.stdout + result.stderr, (args, result.stdout)
    shown = bench.run("--site", "site1.local", "show-config").stdout
    assert "password=***" in shown, shown
    job = bench.enqueue("testapp.tasks.record", key="qpw", value=1)
    result = burst(bench, "--queue", "default")
    assert QUERY_PW not in result.stdout + result.stderr
    assert bench.results("qpw") == [1], job.id


def test_mask_url_masks_every_password_spelling() -> None:
    from benchcelery.bench.redis_url import mask_url

    assert mask_url("redis://h:1/6?password=pw") == "redis://h:1/6?password=***"
    assert mask_url("redis://u:pw@h:1/0?a=1&Password=pw&sentinel_password=pw") == (
        "redis://u:***@h:1/0?a=1&Password=***&sentinel_password=***"
    )
    assert mask_url("unix:///tmp/r.sock?db=1&password=pw") == "unix:///tmp/r.sock?db=1&password=***"
    assert mask_url("redis://h:1/0?db=2") == "redis://h:1/0?db=2"


def test_broker_url_moves_query_credentials_into_the_userinfo(tmp_path: Path) -> None:
    from kombu import Connection

    from benchcelery.bench.config import Settings
    from benchcelery.bench.layout import Bench
    from benchcelery.store.connection import broker_url

    bench = Bench(tmp_path)
    plain = Settings(bench=bench, redis_url="redis://h:1/6?password=p%26w&x=1", bench_id="b", queues={}, conf={})
    url = broker_url(plain)
    assert url == "redis://:p%26w@h:1/6?x=1", url
    assert Connection(url.replace("?x=1", "")).password == "p&w"
    named = Settings(bench=bench, redis_url="redis://h:1/6?username=u&password=pw", bench_id="b", queues={}, conf={})
    assert broker_url(named) == "redis://u:pw@h:1/6"


# --- row 10: control characters in job data are shown escaped, never sent to the terminal ------------
ESCAPES = "\x1b[2J\x1b]0;pwned\x07"


def raw_control(text: str) -> list[str]:
    return sorted({c for c in text if (ord(c) < 32 and c not in "\n\t") or 0x7F <= ord(c) < 0xA0})


def test_terminal_escapes_in_job_data_are_rendered_visibly(bench: BenchHandle) -> None:
    rt = bench.rt()
    pending = valid_message(rt, key="never", value=1)
    pending["headers"]["id"] = f"site1.local::pend{ESCAPES}x"
    push(bench.redis, rt.keys, "long", json.dumps(pending))  # no worker serves long here
    bench.enqueue("testapp.tasks.fail", message=f"boom{ESCAPES}", job_id=f"fails{ESCAPES}")
    worker = burst(bench, "--queue", "default")
    assert raw_control(worker.stdout + worker.stderr) == [], worker.stderr[-2000:]
    failed = next(iter(failed_records(bench)))
    commands = [
        ("jobs", "list"),
        ("jobs", "show", failed),
        ("show-pending-jobs", "-v"),
        ("doctor", "--no-db"),
        ("jobs", "show", "nope" + ESCAPES),  # the error line echoes the id
    ]
    for args in commands:
        result = bench.run("--site", "site1.local", *args)
        assert "Traceback" not in result.stderr, (args, result.stderr)
        assert raw_control(result.stdout + result.stderr) == [], (args, result.stdout, result.stderr)
    listed = bench.run("--site", "site1.local", "jobs", "list").stdout
    assert "\\x1b]0;pwned\\x07" in listed and "boom\\x1b[2J" in listed, listed
    shown = bench.run("--site", "site1.local", "jobs", "show", failed).stdout
    assert "boom\\x1b[2J" in shown, shown
    as_json = json.loads(bench.run("--site", "site1.local", "jobs", "list", "-f", "json").stdout)
    assert any(ESCAPES in str(job.get("extra", {}).get("exception")) for job in as_json), as_json


def test_visible_escapes_controls_and_keeps_lines() -> None:
    from benchcelery.util.text import visible

    assert visible("a\x1b[2Jb\x9b\u202ec\nd\te\r") == "a\\x1b[2Jb\\x9b\\u202ec\nd\te\\x0d"
    assert visible("x\ny\tz", lines=False) == "x\\x0ay\\x09z"
    assert visible("plain — ünïcode") == "plain — ünïcode"


# --- row 13: a site is a real directory of the bench --------------------------------------------------
def test_symlinked_or_file_sites_are_refused_everywhere(bench: BenchHandle, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "site_config.json").write_text(json.dumps({"marker": "outside", "db_password": "x"}))
    (bench.root / "sites" / "linked").symlink_to(elsewhere, target_is_directory=True)
    (bench.root / "sites" / "plainfile").write_text("{}")
    assert "linked" not in bench.bench.sites() and not bench.bench.site_exists("linked")
    for site, words in (("linked", "is a symlink"), ("plainfile", "is a file")):
        for args in (
            ("enqueue", "testapp.tasks.noop"),
            ("show-config",),
            ("worker", "--burst"),
            ("jobs", "list"),
            ("show-pending-jobs",),
            ("use", site),
        ):
            argv = ("--site", site, *args) if args[0] != "use" else args
            line = one_line_error(bench.run(*argv))
            assert words in line and "outside" not in line, (argv, line)
    assert "linked" not in bench.run("--site", "all", "show-config").stdout
    for name, words in (("apps.txt", "is a file"), ("linked", "is a symlink")):
        line = one_line_error(bench.run("new-site", name))
        assert words in line, line
    assert (bench.root / "sites" / "apps.txt").is_file() and not (elsewhere / "logs").exists()
    assert bench.run("new-site", "site3.local").returncode == 0


# --- row 12: deploy files hold any bench path, quoted for their syntax --------------------------------
HOSTILE_PATHS = ["sp ace", "semi;colon#x", "quo\"te'q", "per%cent%(ENV_HOME)s", "dol$HOME\\x"]


def supervisor_programs(text: str) -> dict[str, object]:
    """The programs of a supervisor.conf as supervisor itself reads them (its ini reader, its
    ``%`` expansion, its sections)."""
    from supervisor.options import ServerOptions, UnhosedConfigParser

    parser = UnhosedConfigParser()
    parser.read_string(text)
    options = ServerOptions()
    return {
        section: options.processes_from_section(parser, section, section.split(":", 1)[1])[0]
        for section in parser.sections()
        if section.startswith("program:")
    }


def systemd_words(line: str) -> list[str]:
    """An ``ExecStart=`` value split as systemd does for what we write (double quotes, ``\\``
    escapes, ``%%`` and ``$$``)."""
    import shlex

    return [w.replace("%%", "%").replace("$$", "$") for w in shlex.split(line)]


@pytest.mark.parametrize("name", HOSTILE_PATHS)
def test_deploy_files_round_trip_hostile_bench_paths(tmp_path: Path, name: str) -> None:
    import shlex

    from benchcelery.bench.config import Settings
    from benchcelery.deploy.files import default_user, render_supervisor, render_systemd
    from benchcelery.store.server import find_server_binary

    root = tmp_path / name / "bench"
    bench = make_bench(root, "redis://127.0.0.1:6399")
    settings = Settings.from_bench(bench)
    [(conf_path, text)] = render_supervisor(settings, user=default_user()).items()
    programs = supervisor_programs(text)
    assert programs and all(p.directory == str(bench.root) for p in programs.values())  # type: ignore[attr-defined]
    for section, program in programs.items():
        argv = shlex.split(program.command)  # type: ignore[attr-defined]  # supervisor's own split
        assert str(program.stdout_logfile).startswith(f"{bench.root}/logs/"), section  # type: ignore[attr-defined]
        if section.endswith("-redis-queue"):
            assert argv == [find_server_binary(), str(bench.config_path / "redis_queue.conf")]
        else:
            assert Path(argv[0]).name == "bench" and len(argv) >= 2, argv
    hint = next(line for line in text.splitlines() if "sudo ln -s" in line).replace("%%", "%")
    assert shlex.split(hint.split("sudo ln -s ", 1)[1])[0] == str(conf_path)

    units = render_systemd(settings, user=default_user())
    redis_unit = next(text for path, text in units.items() if path.name.endswith("-redis-queue.service"))
    exec_start = next(line for line in redis_unit.splitlines() if line.startswith("ExecStart="))
    assert systemd_words(exec_start.split("=", 1)[1]) == [
        find_server_binary(),
        str(bench.config_path / "redis_queue.conf"),
    ]
    workdir = next(line for line in redis_unit.splitlines() if line.startswith("WorkingDirectory="))
    assert workdir.split("=", 1)[1].replace("%%", "%") == str(bench.root)
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    folder = tmp_path / "units"
    folder.mkdir()
    for path, body in units.items():
        (folder / path.name).write_text(body)
    services = [str(folder / p.name) for p in units if p.suffix == ".service"]
    result = subprocess.run([analyze, "verify", *services], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "quoting" not in result.stderr.lower(), result.stderr


@pytest.mark.parametrize("name", ["b ;c", "b #c", "trailing "])
def test_bench_init_refuses_paths_supervisor_cannot_hold(tmp_path: Path, name: str) -> None:
    result = subprocess.run(
        [str(Path(sys.executable).with_name("bench")), "init", str(tmp_path / name)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    line = one_line_error(result)
    assert "supervisor would cut the line" in line, line
    assert not (tmp_path / name / "sites").exists()
