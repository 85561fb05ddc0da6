"""The commands a Frappe operator types around the guide's, through the real `bench` script: restart
(a real supervisord, a real `bench start`), execute, setup production / disable-production / sudoers,
systemd targets and symlinks, Frappe's options, version, show-config's shape, set-redis-*-host,
RQ_ADMIN_PASWORD, and what a restart does to a running job.

Every Redis and supervisord here is started by the test; deadlines, never sleeps.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from benchcelery.store.server import free_port, start_server, stop_server
from tests.conftest import BenchHandle, ini, make_bench, wait_until

BIN = Path(sys.executable).parent


# --- a real supervisord that includes a temporary "system" folder --------------------------------
class Supervisord:
    def __init__(self, bench: BenchHandle, tmp: Path) -> None:
        self.bench = bench
        self.system = tmp / "system"
        self.confdir = self.system / "etc" / "supervisor" / "conf.d"
        self.confdir.mkdir(parents=True)
        sock = tmp / "sv.sock"
        self.conf = tmp / "supervisord.conf"
        self.conf.write_text(
            f"[unix_http_server]\nfile={sock}\n\n"
            f"[supervisord]\nlogfile={tmp}/supervisord.log\npidfile={tmp}/supervisord.pid\n"
            f"childlogdir={tmp}\nnodaemon=true\n\n"
            "[rpcinterface:supervisor]\n"
            "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n\n"
            f"[supervisorctl]\nserverurl=unix://{sock}\n\n"
            f"[include]\nfiles={self.confdir}/*.conf\n"
        )
        # What `bench` sees: the system root and the supervisorctl of this supervisord.
        self.env = bench.env(
            BENCH_SYSTEM_ROOT=str(self.system), BENCH_SUPERVISORCTL=f"{BIN / 'supervisorctl'} -c {self.conf}"
        )
        self.proc = subprocess.Popen(
            [str(BIN / "supervisord"), "-c", str(self.conf)],
            env=bench.env(),
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        bench.procs.append(self.proc)
        wait_until(lambda: self.ctl("status").returncode in (0, 3), 30, what="supervisord up")

    def ctl(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "supervisorctl"), "-c", str(self.conf), *args],
            env=self.bench.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def states(self) -> dict[str, str]:
        out = self.ctl("status").stdout
        return {line.split()[0]: line.split()[1] for line in out.splitlines() if line.strip()}

    def pids(self) -> dict[str, int]:
        out = self.ctl("status").stdout
        return {
            line.split()[0]: int(line.split("pid ", 1)[1].split(",")[0]) for line in out.splitlines() if "pid " in line
        }

    def stop(self) -> None:
        self.ctl("shutdown")
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)


@pytest.fixture
def supervisord(bench: BenchHandle, tmp_path: Path) -> Iterator[Supervisord]:
    daemon = Supervisord(bench, tmp_path)
    yield daemon
    daemon.stop()


# --- rows 1, 3, 11 + issue 26 rows 10, 13: setup production, restart, disable-production ------------
def test_setup_production_restart_and_disable_against_a_real_supervisord(
    bench: BenchHandle, supervisord: Supervisord
) -> None:
    name = bench.root.name
    # The guide's `supervisorctl stop frappe-worker:*` works when the group is named so; a shorter stop
    # wait on the default queue is reported by every restart.
    bench.set_config(supervisor_workers_group="frappe-worker", workers={"default": {"stop_timeout": 100}})
    env = supervisord.env

    dry = bench.run("setup", "production", "root", "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    link = supervisord.confdir / f"{name}.conf"
    assert f"Would link {link} -> {bench.root}/config/supervisor.conf" in dry.stdout
    assert "Would run " in dry.stdout and " reread" in dry.stdout and " update" in dry.stdout
    assert not link.exists() and not (bench.root / "config" / "supervisor.conf").exists()
    assert "restart_supervisor_on_update" not in bench.bench.common_config()
    assert "Warning: the processes will run as root" in dry.stderr  # issue 26 row 10

    # The queue Redis program it also writes cannot bind (the test's Redis has the port): not our concern.
    result = bench.run("setup", "production", "root", "--yes", env=env)
    assert result.returncode == 0, result.stderr
    assert link.is_symlink() and os.readlink(link) == str(bench.root / "config" / "supervisor.conf")
    assert bench.bench.common_config()["restart_supervisor_on_update"] == 1
    assert f"Link {link} -> " in result.stdout and "reread" in result.stdout
    group = "frappe-worker"
    wait_until(
        lambda: (s := supervisord.states()) and all(v == "RUNNING" for k, v in s.items() if k.startswith(group)),
        120,
        interval=0.5,
        what="every worker RUNNING",
    )
    workers = {k for k in supervisord.states() if k.startswith(f"{group}:")}
    assert {f"{group}:{name}-{q}-worker-0" for q in ("short", "default", "long")} <= workers
    before = {k: v for k, v in supervisord.pids().items() if k in workers}

    # A job running at the restart finishes (the long queue waits timeout + 60 s); one waiting behind it
    # is not lost; the other queues' workers restart without waiting for it.
    bench.enqueue("testapp.tasks.wait_for_flag", queue="long", key="held", flag="held-go", value="first", limit=120)
    bench.wait_results("held", 1, timeout=60)
    bench.enqueue("testapp.tasks.record", queue="long", key="held", value="second")
    restart = subprocess.Popen(
        [str(BIN / "bench"), "restart"],
        cwd=bench.root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    short = f"{group}:{name}-short-worker-0"
    wait_until(lambda: supervisord.pids().get(short, before[short]) != before[short], 90, what="short restarted")
    assert bench.results("held") == [{"start": "first"}]  # still running: not killed by the restart
    bench.redis.set("test:held-go", 1)
    out, err = restart.communicate(timeout=180)
    assert restart.returncode == 0, err
    lines = out.splitlines()
    assert lines[0] == f"Restarted supervisor group {group} ({len(workers)} processes)"
    assert any(line.startswith("Queue default: a restart waits 100 s") for line in lines)
    assert bench.wait_results("held", 3, timeout=60) == [{"start": "first"}, "first", "second"]
    after = supervisord.pids()
    assert all(after[k] != pid for k, pid in before.items()), (before, after)  # every pid changed
    bench.enqueue("testapp.tasks.record", queue="short", key="after", value=1)
    assert bench.wait_results("after", 1, timeout=60) == [1]
    assert bench.redis.zcard(f"{bench.prefix}failed:long") == 0

    # The guide's own commands act on the group.
    assert supervisord.ctl("stop", f"{group}:*").returncode == 0
    assert all(v == "STOPPED" for k, v in supervisord.states().items() if k.startswith(group))
    assert supervisord.ctl("start", f"{group}:*").returncode == 0

    off = bench.run("disable-production", env=env)
    assert off.returncode == 0, off.stderr
    assert not link.exists() and f"Remove the link {link}" in off.stdout
    wait_until(lambda: not any(k.startswith(group) for k in supervisord.states()), 120, what="programs removed")
    again = bench.run("disable-production", env=env)
    assert again.returncode == 1 and "Production is not set up for this bench" in again.stderr


def test_restart_with_nothing_running_says_what_it_looked_for(bench: BenchHandle, tmp_path: Path) -> None:
    env = bench.env(BENCH_SUPERVISORCTL=f"{BIN / 'supervisorctl'} -c {tmp_path / 'none.conf'}", BENCH_SYSTEMCTL="false")
    (tmp_path / "none.conf").write_text(f"[supervisorctl]\nserverurl=unix://{tmp_path}/none.sock\n")
    result = bench.run("restart", env=env)
    assert result.returncode == 1
    line = result.stderr.strip()
    assert len(line.splitlines()) == 1
    assert line.startswith(f"Nothing of the bench {bench.root.name} is running to restart (supervisor: ")
    assert "systemd: " in line and "bench start: no bench start running" in line
    both = bench.run("restart", "--supervisor", "--systemd", env=env)
    assert both.returncode == 2


# --- row 1 in development: a running `bench start` restarts its workers and keeps running ----------
@pytest.fixture
def own_bench(tmp_path: Path) -> Iterator[BenchHandle]:
    import benchcelery.runtime as runtime
    from benchcelery.context import local

    port = free_port()
    url = f"redis://127.0.0.1:{port}"
    handle = BenchHandle(make_bench(tmp_path / "own", url), redis.Redis(port=port), url)
    yield handle
    handle.stop_all()
    runtime._current = None
    local.reset()
    local.bench_path = None


def _started(output: str, name: str) -> list[int]:
    return [int(line.split("pid=")[1].rstrip(")")) for line in output.splitlines() if f"{name} started (pid=" in line]


def test_restart_restarts_the_workers_of_a_running_bench_start(own_bench: BenchHandle) -> None:
    proc = own_bench.start("start", "--no-dev", "-c", "worker=2")
    wait_until(lambda: len(_started(own_bench.output(proc), "worker-2")) == 1, 90, what="bench start up")
    own_bench.enqueue("testapp.tasks.record", queue="short", key="up", value=1)
    own_bench.wait_results("up", 1, timeout=90)
    before = {n: _started(own_bench.output(proc), n) for n in ("worker-1", "worker-2", "schedule")}

    result = own_bench.run("restart")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"Asked bench start (pid {proc.pid}) to restart its scheduler and workers")
    for name in before:
        wait_until(lambda n=name: len(_started(own_bench.output(proc), n)) == 2, 90, what=f"{name} started again")
    output = own_bench.output(proc)
    assert "--no-dev: nothing to change here" in output
    assert "worker-1: restarting (bench restart)" in output
    assert "redis_queue: restarting" not in output  # Redis keeps running
    assert proc.poll() is None  # bench start keeps running
    own_bench.enqueue("testapp.tasks.record", queue="short", key="after", value=2)
    assert own_bench.wait_results("after", 1, timeout=90) == [2]
    os.kill(proc.pid, signal.SIGINT)
    assert proc.wait(90) == 0

    bad = own_bench.run("start", "-c", "nosuch=2")
    assert bad.returncode == 1 and "--concurrency names nosuch" in bad.stderr


# --- row 2: execute ---------------------------------------------------------------------------------
def test_execute_runs_now_in_the_site_context_and_prints_json(bench: BenchHandle) -> None:
    site = ("--site", "site1.local")
    # No worker runs in this test: the value comes from this very command.
    result = bench.run(*site, "execute", "testapp.tasks.record", "--args", "['ex', {'a': 1}]")
    assert result.returncode == 0, result.stderr
    assert result.stdout == '"ok"\n'
    assert bench.results("ex") == [{"a": 1}]
    kw = bench.run(*site, "execute", "testapp.tasks.record", "--kwargs", '{"key": "ex2", "value": [true, null]}')
    assert kw.returncode == 0 and kw.stdout == '"ok"\n' and bench.results("ex2") == [[True, None]]
    ctx = bench.run(*site, "execute", "testapp.tasks.context", "--kwargs", "{'key': 'ctx'}")
    assert ctx.returncode == 0 and ctx.stdout == ""  # returns None: nothing printed
    seen = bench.results("ctx")[0]
    assert seen["site"] == "site1.local" and seen["conf_marker"] == "site1.local" and seen["user"] == "Administrator"

    failed = bench.run(*site, "execute", "testapp.tasks.fail", "--kwargs", "{'message': 'no good'}")
    assert failed.returncode == 1 and failed.stdout == ""
    assert len(failed.stderr.strip().splitlines()) == 1 and "no good" in failed.stderr
    verbose = bench.run(*site, "--verbose", "execute", "testapp.tasks.fail")
    assert verbose.returncode == 1 and "Traceback (most recent call last)" in verbose.stderr

    refused = bench.run(*site, "execute", "os.system", "--args", "['touch /tmp/x']")
    assert refused.returncode == 1 and "not in an installed app" in refused.stderr
    evil = bench.run(*site, "execute", "testapp.tasks.record", "--args", "__import__('os').getpid()")
    assert evil.returncode == 1 and "--args must be a Python literal or JSON" in evil.stderr

    every = bench.run("--site", "all", "execute", "testapp.tasks.record", "--args", "['all']")
    assert every.returncode == 0 and every.stdout.splitlines() == ['site1.local: "ok"', 'site2.local: "ok"']

    profiled = bench.run(*site, "--profile", "execute", "testapp.tasks.noop")
    assert profiled.returncode == 0 and "function calls" in profiled.stderr


# --- rows 4, 5: systemd targets, Requires=, symlinks, --stop, restart --systemd -----------------------
def test_systemd_targets_installable_symlinks_and_verify(bench: BenchHandle, tmp_path: Path) -> None:
    bench.set_config(dashboard=1)
    name = bench.root.name
    assert bench.run("setup", "systemd", "--yes").returncode == 0
    units = bench.root / "config" / "systemd"
    targets = sorted(units.glob("*.target"))
    assert {t.name for t in targets} >= {f"{name}.target", f"{name}-workers.target", f"{name}-redis.target"}
    for target in targets:
        assert ini(target.read_text())["Install"]["WantedBy"] == "multi-user.target", target.name
    top = ini((units / f"{name}.target").read_text())["Unit"]
    assert "Wants" not in top
    requires = top["Requires"].split()
    assert f"{name}-workers.target" in requires and f"{name}-redis.target" in requires
    if (units / f"{name}-dashboard.service").exists():  # the web target holds the dashboard
        assert f"{name}-web.target" in requires
        assert ini((units / f"{name}-dashboard.service").read_text())["Unit"]["PartOf"] == f"{name}-web.target"
    for target in targets:  # restarting the workers must not restart Redis through the bench target
        assert "PartOf" not in ini(target.read_text())["Unit"]
    assert ini((units / f"{name}-long-worker@.service").read_text())["Service"]["TimeoutStopSec"] == "7260"

    analyze = shutil.which("systemd-analyze")
    if analyze:
        check = subprocess.run(
            [analyze, "verify", "--man=no", *map(str, targets)], capture_output=True, text=True, cwd=units
        )
        assert check.returncode == 0, check.stderr
        assert "no installation config" not in check.stderr

    system = tmp_path / "system"
    env = bench.env(BENCH_SYSTEM_ROOT=str(system))
    dry = bench.run("setup", "systemd", "--create-symlinks", "--dry-run", env=env)
    assert dry.returncode == 0 and f"Would link {system}/etc/systemd/system/{name}.target" in dry.stdout
    assert not (system / "etc").exists()
    made = bench.run("setup", "systemd", "--create-symlinks", env=env)
    assert made.returncode == 0, made.stderr
    linked = sorted((system / "etc" / "systemd" / "system").iterdir())
    assert [p.name for p in linked] == sorted(p.name for p in units.iterdir())
    assert all(os.readlink(p) == str(units / p.name) for p in linked)
    assert "Skip `" in made.stdout and "daemon-reload` (system root is" in made.stdout
    stop = bench.run("setup", "systemd", "--stop", env=env)
    assert stop.returncode == 0 and f"stop {name}.target` (system root is" in stop.stdout
    gone = bench.run("setup", "systemd", "--delete-symlinks", env=env)
    assert gone.returncode == 0 and not list((system / "etc" / "systemd" / "system").iterdir())

    # restart --systemd reads `systemctl show -p Requires <bench>.target` (a recording systemctl here:
    # this machine's PID 1 is not systemd).
    log = tmp_path / "systemctl.log"
    stub = tmp_path / "systemctl"
    stub.write_text(
        "#!/bin/sh\n"
        f'echo "$@" >> {log}\n'
        'case "$1" in show) echo "Requires=' + " ".join(requires) + '"; echo LoadState=loaded;; esac\n'
    )
    stub.chmod(0o755)
    restarted = bench.run("restart", "--systemd", env=bench.env(BENCH_SYSTEMCTL=str(stub)))
    assert restarted.returncode == 0, restarted.stderr
    assert restarted.stdout.splitlines()[0] == f"Restarted systemd unit {name}-workers.target"
    assert f"restart {name}-workers.target" in log.read_text()
    assert f"restart {name}-redis.target" not in log.read_text()


# --- rows 3, 6 + issue 26 row 10: sudoers, Frappe's options, warnings ---------------------------------
def test_sudoers_frappe_options_and_user_warnings(bench: BenchHandle, tmp_path: Path) -> None:
    env = bench.env(BENCH_SYSTEM_ROOT=str(tmp_path / "system"))
    user = "root"
    sudoers = bench.run("setup", "sudoers", user, env=env)
    assert sudoers.returncode == 0, sudoers.stderr
    path = tmp_path / "system" / "etc" / "sudoers.d" / f"benchcelery-{user}"
    text = path.read_text()
    assert f"{user} ALL = (root) NOPASSWD: " in text and "supervisorctl" in text
    assert oct(path.stat().st_mode & 0o777) == "0o440"

    skip = bench.run("setup", "supervisor", "--skip-supervisord", "--skip-redis", "--yes")
    assert skip.returncode == 0 and "--skip-supervisord: nothing to skip" in skip.stderr
    assert "Warning: the processes will run as root" in skip.stderr  # we run the tests as root
    nobody = bench.run("setup", "systemd", "--user", "no-such-user-x1", "--yes")
    assert nobody.returncode == 0
    assert "Warning: user no-such-user-x1 does not exist on this machine" in nobody.stderr

    profiled = bench.run("--profile", "version")
    assert profiled.returncode == 0 and "function calls" in profiled.stderr


# --- rows 7, 8, 9, 10 --------------------------------------------------------------------------------
def test_version_show_config_and_redis_hosts(bench: BenchHandle) -> None:
    data = json.loads(bench.run("version", "-f", "json").stdout)
    names = {row["name"]: row for row in data}
    for name in ("benchcelery", "celery", "kombu", "celery-redbeat", "redis-py", "redis-server", "testapp"):
        assert name in names, name
    assert names["redis-server"]["version"] == bench.redis.info("server")["redis_version"]
    plain = bench.run("version").stdout.splitlines()
    assert plain[0].startswith("benchcelery ") and any(line.startswith("testapp ") for line in plain)
    assert bench.run("version", "-f", "table").stdout.startswith("NAME")

    one = json.loads(bench.run("--site", "site1.local", "show-config", "-f", "json").stdout)
    assert list(one) == ["site1.local"] and one["site1.local"]["marker"] == "site1.local"
    every = json.loads(bench.run("--site", "all", "show-config", "-f", "json").stdout)
    assert list(every) == ["site1.local", "site2.local"]

    queue = bench.run("set-redis-queue-host", "10.0.0.5:11000")
    assert queue.returncode == 0 and bench.bench.common_config()["redis_queue"] == "redis://10.0.0.5:11000"
    cache = bench.run("set-redis-cache-host", "redis://127.0.0.1:13000/1")
    assert cache.returncode == 0 and bench.bench.common_config()["redis_cache"] == "redis://127.0.0.1:13000/1"


def test_rq_admin_pasword_printed_and_read(bench: BenchHandle, tmp_path: Path) -> None:
    made = bench.run("create-rq-users", "--set-admin-password")
    assert made.returncode == 0, made.stderr
    exported = [line for line in made.stdout.splitlines() if line.startswith("export ")]
    assert len(exported) == 1 and exported[0].startswith("export RQ_ADMIN_PASWORD=")  # Frappe's spelling

    # A Redis whose default user needs a password: read from either spelling.
    port = free_port()
    server = start_server(port, tmp_path / "pw", args=["--requirepass", "s3cret"])
    try:
        bench.set_config(redis_queue=f"redis://127.0.0.1:{port}")

        def server_row(**env: str) -> list[dict[str, str]]:
            rows = json.loads(bench.run("version", "-f", "json", env=bench.env(**env)).stdout)
            return [r for r in rows if r["name"] == "redis-server"]

        assert server_row() == []  # refused without the password
        assert server_row(RQ_ADMIN_PASWORD="s3cret")
        assert server_row(RQ_ADMIN_PASSWORD="s3cret")
    finally:
        stop_server(server)


# --- row 11: what a restart waits for, per queue -----------------------------------------------------
def test_stop_waits_are_the_queue_timeout_plus_60(bench: BenchHandle) -> None:
    assert bench.run("setup", "supervisor", "--skip-redis", "--yes").returncode == 0
    text = (bench.root / "config" / "supervisor.conf").read_text()
    waits = {
        block.split("]", 1)[0]: line.split("=", 1)[1]
        for block in text.split("[program:")[1:]
        for line in block.splitlines()
        if line.startswith("stopwaitsecs=")
    }
    name = bench.root.name
    assert waits[f"{name}-short-worker"] == "360"
    assert waits[f"{name}-default-worker"] == "1860"
    assert waits[f"{name}-long-worker"] == "7260"


def test_a_job_longer_than_a_short_stop_wait_is_cut_short_and_runs_again(
    bench: BenchHandle, supervisord: Supervisord
) -> None:
    """`workers.<queue>.stop_timeout` below the timeout: the restart kills the running job, says so,
    and the job runs again from the start on the restarted worker (never lost)."""
    bench.set_config(workers={"short": {"stop_timeout": 3}}, job_lease=5)
    env = supervisord.env
    assert bench.run("setup", "production", "root", "--yes", env=env).returncode == 0
    name = bench.root.name
    worker = f"{name}-workers:{name}-short-worker-0"
    wait_until(lambda: supervisord.states().get(worker) == "RUNNING", 120, interval=0.5, what="short worker up")
    bench.enqueue("testapp.tasks.wait_for_flag", queue="short", key="cut", flag="cut-go", value="v", limit=120)
    bench.wait_results("cut", 1, timeout=60)
    result = bench.run("restart", env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (
        "Queue short: a restart waits 3 s (workers.short.stop_timeout), less than its time limit 305 s: "
        "a job still running then is killed and runs again from the start"
    ) in result.stdout
    assert "v" not in bench.results("cut")  # killed before it finished
    # It runs again from the start on the restarted worker, and completes this time.
    assert bench.wait_results("cut", 2, timeout=120) == [{"start": "v"}, {"start": "v"}]
    bench.redis.set("test:cut-go", 1)
    assert bench.wait_results("cut", 3, timeout=60) == [{"start": "v"}, {"start": "v"}, "v"]
    assert bench.run("disable-production", env=env).returncode == 0
