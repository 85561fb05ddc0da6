"""An operator's second week (rows 2, 5, 6, 7, 9, 12): ids that can be typed, doctor for an ACL user,
one hint for an unreachable Redis, event tags purge-jobs finds, per-site and running rows, README
snippets that run. Real `bench` processes (the installed entry point) and the session Redis.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchcelery.store.server import free_port, is_listening
from tests.conftest import BenchHandle, wait_until

S1 = ("--site", "site1.local")
README = Path(__file__).parents[1] / "README.md"


def one_line(result: subprocess.CompletedProcess[str], code: int) -> str:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


# --- row 2: a unique start of a job id works wherever an id is taken ------------------------------------
def test_a_unique_prefix_of_a_job_id_works_everywhere(bench: BenchHandle) -> None:
    from benchcelery.dashboard import actions

    failed = bench.enqueue("testapp.tasks.fail", queue="short")
    assert bench.run("worker", "--burst", "--queue", "short").returncode == 0
    short = failed.id.split("::", 1)[1]
    prefix = short[:8]  # what the dashboard shows

    shown = bench.run(*S1, "jobs", "show", prefix)
    assert shown.returncode == 0, shown.stderr
    assert f"id: {failed.id}" in shown.stdout and "state: failed" in shown.stdout
    assert bench.run("jobs", "show", f"site1.local::{prefix}").returncode == 0  # the full form's start too
    retried = bench.run(*S1, "jobs", "retry", prefix)
    assert retried.returncode == 0, retried.stderr
    assert retried.stdout.strip() == f"Retried {failed.id}"
    deleted = bench.run(*S1, "jobs", "delete", prefix)  # the retried job waits again
    assert deleted.returncode == 0, deleted.stderr
    assert deleted.stdout.strip() == f"Deleted queued job {failed.id}"  # the whole id of what it deleted

    bench.enqueue("testapp.tasks.noop", job_id="nightly-one")
    bench.enqueue("testapp.tasks.noop", job_id="nightly-two")
    line = one_line(bench.run(*S1, "jobs", "cancel", "nightly"), 1)
    assert line == (
        "Job id site1.local::nightly is ambiguous: it starts site1.local::nightly-one, "
        "site1.local::nightly-two; give more characters"
    )
    cancelled = bench.run(*S1, "jobs", "cancel", "nightly-o")
    assert cancelled.returncode == 0, cancelled.stderr
    assert cancelled.stdout.strip() == "Job site1.local::nightly-one removed"
    assert one_line(bench.run(*S1, "jobs", "show", "nightly-o"), 1).startswith("No job site1.local::nightly-o ")
    # the dashboard's buttons call the same functions
    rt = bench.rt()
    assert (
        actions.cancel(rt, "alice", "site1.local::nightly-t", terminate=False) == "Job site1.local::nightly-t removed"
    )
    assert one_line(bench.run(*S1, "jobs", "delete", "zzz"), 1) == "No job site1.local::zzz"
    pending = json.loads(bench.run(*S1, "show-pending-jobs", "-f", "json").stdout)
    assert pending["total"] == {"pending": 0, "failed": 0, "processing": 0}


# --- row 5: doctor with an ACL user says what it knows ---------------------------------------------------
@pytest.fixture
def acl_user(bench: BenchHandle) -> Iterator[str]:
    from benchcelery.deploy.acl import BENCH_USER_COMMANDS

    user = bench.bench.bench_id
    prefix = bench.prefix
    bench.redis.execute_command(
        "ACL", "SETUSER", user, "reset", "on", ">acl-pw", f"~{prefix}*", f"&{prefix}*", *BENCH_USER_COMMANDS
    )
    bench.set_config(use_rq_auth=True, rq_username=user, rq_password="acl-pw")
    yield user
    bench.redis.execute_command("ACL", "DELUSER", user)


def test_doctor_as_an_acl_user_leaves_out_what_it_cannot_know(bench: BenchHandle, acl_user: str) -> None:
    result = bench.run(*S1, "doctor", "--no-db")
    assert result.returncode in (0, 1) and "Traceback" not in result.stderr, result.stderr
    version = bench.redis.info()["redis_version"]
    line = next(line for line in result.stdout.splitlines() if line.startswith("Redis ") and " at " in line)
    assert line == (
        f"Redis {version} at {bench.url}: connected (INFO is not permitted to this ACL user: "
        "memory, maxmemory-policy and persistence not shown)"
    )
    data = json.loads(bench.run(*S1, "doctor", "--no-db", "-f", "json").stdout)
    assert data["redis"]["version"] == version and data["redis"]["info_permitted"] is False
    assert data["redis"]["persistence"] == "" and data["redis"]["warnings"] == []


# --- row 6: one line with the likely fix, exit 69, from every command ------------------------------------
UNREACHABLE = [
    ["enqueue", "testapp.tasks.noop"],
    ["show-pending-jobs"],
    ["jobs", "list"],
    ["jobs", "show", "abc"],
    ["jobs", "retry", "--all"],
    ["jobs", "cancel", "abc"],
    ["doctor", "--no-db"],
    ["purge-jobs"],
    ["ready-for-migration"],
    ["scheduler", "status"],
    ["trigger-scheduler-event", "all"],
    ["trigger-scheduler-event", "daily"],
    ["publish-realtime", "ev"],
    ["worker", "--burst"],
]


def test_unreachable_redis_is_one_line_with_the_fix_and_exit_69_everywhere(bench: BenchHandle) -> None:
    url = f"redis://127.0.0.1:{free_port()}"
    bench.set_config(redis_queue=url)
    lines = {" ".join(args): one_line(bench.run(*S1, *args), 69) for args in UNREACHABLE}
    expected = (
        f"Redis at {url} is unreachable: connection refused "
        "(is `bench start` running? Else check redis_queue in sites/common_site_config.json)"
    )
    assert set(lines.values()) == {expected}, lines
    # Without a Procfile that runs the bench's Redis (production), the config key alone.
    (bench.root / "Procfile").unlink()
    line = one_line(bench.run(*S1, "show-pending-jobs"), 69)
    assert line.endswith("connection refused (check redis_queue in sites/common_site_config.json)")


# --- row 7: purge-jobs --event takes what enqueue --event takes ------------------------------------------
def test_purge_jobs_event_takes_the_tags_enqueue_takes(bench: BenchHandle) -> None:
    for event in ("nightly", "daily", 'odd "tag"', None):
        args = ["--event", event] if event else []
        assert bench.run(*S1, "enqueue", "testapp.tasks.noop", "--queue", "long", *args).returncode == 0
    bench.enqueue("testapp.tasks.noop", queue="long", site="site2.local", event="nightly")

    purged = bench.run(*S1, "purge-jobs", "--event", "nightly")
    assert purged.returncode == 0, purged.stderr
    assert purged.stdout.strip() == "Purged 1 job of site site1.local (1 pending, 0 failed)"
    assert bench.run(*S1, "purge-jobs", "--event", 'odd "tag"').stdout.startswith("Purged 1 job ")
    assert bench.run(*S1, "purge-jobs", "--event", "daily").stdout.startswith("Purged 1 job ")  # a scheduler event
    assert bench.run(*S1, "purge-jobs", "--event", "nightly").stdout.startswith("Purged 0 jobs ")
    pending = json.loads(bench.run("--site", "all", "show-pending-jobs", "-f", "json").stdout)
    sites = {s: c["pending"] for s, c in pending["queues"][2]["sites"].items()}
    assert sites == {"site1.local": 1, "site2.local": 1}  # the untagged job and the other site's
    assert "Invalid value for '--event'" in bench.run(*S1, "purge-jobs", "--event", "").stderr


# --- row 9: per-site rows, running jobs in -v, newest failures first ------------------------------------
def test_show_pending_jobs_per_site_rows_and_running_jobs(bench: BenchHandle) -> None:
    for site, n in (("site1.local", 2), ("site2.local", 1)):
        for _ in range(n):
            bench.enqueue("testapp.tasks.noop", queue="short", site=site)
    bench.enqueue("testapp.tasks.wait_for_flag", queue="long", key="waited", flag="go")
    worker = bench.start("worker", "--queue", "long")
    wait_until(lambda: _running(bench), 60, what="the long job running")

    text = bench.run("--site", "all", "show-pending-jobs").stdout
    short = text.split("Queue: short\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert short[:3] == ["  - pending: 3", "  - failed: 0", "  - started: 0"]
    assert [row.split() for row in short[3:]] == [
        ["SITE", "PENDING", "FAILED", "STARTED"],
        ["site1.local", "2", "0", "0"],
        ["site2.local", "1", "0", "0"],
    ]
    assert "SITE" not in bench.run(*S1, "show-pending-jobs").stdout  # one site: the guide's block alone

    verbose = bench.run(*S1, "show-pending-jobs", "-v").stdout
    long_block = verbose.split("Queue: long\n", 1)[1].split("\n\n", 1)[0]
    assert re.search(
        r"^    running site1\.local::\S+ testapp\.tasks\.wait_for_flag .*\(for \d+s on \S+\)$", long_block, re.M
    )
    assert len(re.findall(r"^    #\d+ site1\.local::", verbose, re.M)) == 2
    data = json.loads(bench.run(*S1, "show-pending-jobs", "-v", "-f", "json").stdout)
    assert [(j["queue"], j["method"]) for j in data["running"]] == [("long", "testapp.tasks.wait_for_flag")]
    bench.redis.set("test:go", 1)
    worker.terminate()
    assert worker.wait(60) == 0


def _running(bench: BenchHandle) -> bool:
    data = json.loads(bench.run(*S1, "show-pending-jobs", "-f", "json").stdout)
    return data["total"]["processing"] == 1


def test_jobs_list_for_all_sites_puts_the_newest_failure_first_whatever_its_queue(bench: BenchHandle) -> None:
    bench.enqueue("testapp.tasks.fail", queue="short", message="older")
    assert bench.run("worker", "--burst", "--queue", "short").returncode == 0
    bench.enqueue("testapp.tasks.fail", queue="long", site="site2.local", message="newer")
    assert bench.run("worker", "--burst", "--queue", "long").returncode == 0
    bench.enqueue("testapp.tasks.fail", queue="default", message="newest")
    assert bench.run("worker", "--burst", "--queue", "default").returncode == 0

    data = json.loads(bench.run("--site", "all", "jobs", "list", "--state", "failed", "-f", "json").stdout)
    assert [(j["queue"], j["site"]) for j in data] == [
        ("default", "site1.local"),
        ("long", "site2.local"),
        ("short", "site1.local"),
    ]
    rows = bench.run("--site", "all", "jobs", "list").stdout.splitlines()[1:]
    assert [row.split()[1] for row in rows] == ["default", "long", "short"]
    one = json.loads(bench.run("--site", "all", "jobs", "list", "--limit", "1", "-f", "json").stdout)
    assert [j["queue"] for j in one] == ["default"]


# --- row 12: every README bash snippet runs as written ---------------------------------------------------
SKIP_MARK = "# not run by the README test"
FOREGROUND_MARK = "# foreground until Ctrl-C"


def readme_snippets() -> list[str]:
    """The README's ```bash blocks, in order, without those whose first line is SKIP_MARK."""
    blocks = re.findall(r"^```bash\n(.*?)^```", README.read_text(), re.S | re.M)
    return [b for b in blocks if not b.startswith(SKIP_MARK)]


def test_readme_snippets_run_as_written(tmp_path: Path) -> None:
    """Each snippet runs in bash (-e) in a temporary directory, `bench` on PATH as the skipped install
    snippet puts it, the working directory carried from one snippet to the next (as a terminal's
    would be); a FOREGROUND_MARK line is started in the background (its own Redis on a free port,
    as `bench init` chose) and stopped with SIGINT (Ctrl-C) at the end."""
    snippets = readme_snippets()
    text = "\n".join(snippets)
    assert "bench use site1.local" in text and "bench start" in text
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BENCH_", "FRAPPE_", "VIRTUAL_ENV"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    cwd = tmp_path
    background: list[subprocess.Popen[bytes]] = []
    try:
        for snippet in snippets:
            lines = snippet.splitlines()
            for i, line in enumerate(lines):
                if FOREGROUND_MARK in line:
                    cwd = _run_bash("\n".join(lines[:i]), cwd, env)
                    background.append(_start_foreground(line.split(FOREGROUND_MARK)[0], cwd, env))
                    _wait_for_its_redis(cwd, background[-1])
                    lines = lines[i + 1 :]
                    break
            cwd = _run_bash("\n".join(lines), cwd, env)
        log = cwd / "logs" / "jobs_demo.log"
        wait_until(lambda: log.exists() and "?: hello" in log.read_text(), 60, what="the README's job ran")
    finally:
        for proc in background:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGINT)
                try:
                    proc.wait(90)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(10)
    for proc in background:
        assert proc.returncode is not None and proc.returncode != -signal.SIGKILL


def _run_bash(script: str, cwd: Path, env: dict[str, str]) -> Path:
    """Run ``script`` with bash -e in ``cwd``; returns the directory it ended in."""
    if not script.strip():
        return cwd
    where = cwd / ".readme-cwd"
    result = subprocess.run(
        ["bash", "-e", "-c", f'{script}\npwd > "{where}"'],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, f"README snippet failed:\n{script}\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr
    ended = Path(where.read_text().strip())
    where.unlink()
    return ended


def _start_foreground(command: str, cwd: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    log = open(cwd / "readme-foreground.log", "wb")  # noqa: SIM115 - kept by the child
    return subprocess.Popen(
        ["bash", "-c", f"exec {command}"],
        cwd=cwd,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _wait_for_its_redis(bench_dir: Path, proc: subprocess.Popen[bytes]) -> None:
    from urllib.parse import urlsplit

    conf = json.loads((bench_dir / "sites" / "common_site_config.json").read_text())
    port = urlsplit(conf["redis_queue"]).port
    assert port is not None
    wait_until(lambda: is_listening(port) or proc.poll() is not None, 60, what="bench start's Redis")
    assert proc.poll() is None, (bench_dir / "readme-foreground.log").read_text()
