"""Hostile input, tried as an attacker would (issue 11): each test reproduces rows of the issue's
table against a real Redis, real `bench` processes and real workers.

Rows: 1-3 method allowlist, 4-6 Redis ACL and channels, 7 secrets, 8 site scoping, 9 --kwargs
clashes, 10 Celery's built-in tasks, 11 deploy files, 12-13 configuration, 14 realtime rooms,
15 console cache, 16 echoed input. Issue 22: rows 1 (forged header types, crash-looping messages),
5 (unreadable elements in read commands and pages), 7 (failure record caps), 11 (embedded callbacks).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

import benchcelery
from benchcelery.deploy.acl import bench_acl_line
from benchcelery.errors import ValidationError
from benchcelery.jobs import inspect
from benchcelery.store.server import is_listening
from tests.conftest import BenchHandle, bench_on_free_port, reset_runtime, wait_until
from tests.forge import nested, push, set_body, valid_message
from tests.test_realtime import Client, Relay, connect, publish, token

EVIL_TASKS = '''"""An app as real apps are: it imports os and subprocess."""

import os
import subprocess
from time import sleep


def hello(name: str = "world") -> str:
    return f"hello {name}"


class Report:
    @staticmethod
    def build(n: int = 1) -> int:
        return n


def _use() -> None:
    os.getcwd(), subprocess.PIPE, sleep
'''


def one_line_error(result: subprocess.CompletedProcess[str], code: int = 1) -> str:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    if code == 2:  # click's usage errors: usage, hint, then one "Error: ..." line
        lines = [line for line in lines if line.startswith("Error:")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def failed_records(bench: BenchHandle, queue: str = "default") -> dict[str, dict]:
    keys = bench.rt().keys
    return {json.loads(v)["job_id"]: json.loads(v) for v in bench.redis.hvals(keys.failed_data(queue))}


@pytest.fixture
def myapp(bench: BenchHandle) -> BenchHandle:
    result = bench.run("new-app", "myapp")
    assert result.returncode == 0, result.stderr
    (bench.root / "apps" / "myapp" / "tasks.py").write_text(EVIL_TASKS)
    return bench


# --- rows 1, 2, 16: the allowlist resolves, then checks what it found ---------------------------------
ATTRIBUTE_WALKS = [
    "myapp.tasks.os.system",
    "myapp.tasks.subprocess.run",
    "myapp.tasks.os.remove",
    "myapp.tasks.sleep",  # `from time import sleep`: lives in the app's namespace, defined elsewhere
    "jobs_demo.tasks.__loader__.get_data",
    "jobs_demo.tasks.time.sleep",
    "jobs_demo.tasks.benchcelery.enqueue",
    "jobs_demo.__builtins__.eval",
    "myapp.tasks.os",
]


def test_attribute_walks_and_dunders_are_refused_at_enqueue(myapp: BenchHandle, tmp_path: Path) -> None:
    pwned = tmp_path / "pwned.txt"
    result = myapp.run(
        "--site",
        "site1.local",
        "enqueue",
        "myapp.tasks.os.system",
        "--kwargs",
        json.dumps({"command": f"id > {pwned}"}),
    )
    assert "is refused" in one_line_error(result)
    for method in ATTRIBUTE_WALKS:
        with pytest.raises(ValidationError, match="refused"):
            myapp.enqueue(method, command="true")
    config = myapp.root / "sites" / "common_site_config.json"
    with pytest.raises(ValidationError, match="refused"):
        myapp.enqueue("jobs_demo.tasks.say", message="x", on_success="jobs_demo.tasks.__loader__.get_data")
    with pytest.raises(ValidationError, match="refused"):
        myapp.enqueue("jobs_demo.tasks.__loader__.get_data", path=str(config), on_success="jobs_demo.tasks.say")
    # What an app defines still runs: functions and Class.method of its own modules.
    assert myapp.enqueue("myapp.tasks.hello", name="x") is not None
    assert myapp.enqueue("myapp.tasks.Report.build", n=2) is not None
    # An exact allowed_methods entry is still checked the same way.
    myapp.set_config(allowed_methods=["myapp.tasks.os.system"])
    with pytest.raises(ValidationError, match="refused"):
        myapp.enqueue("myapp.tasks.os.system", command="true")
    assert not pwned.exists()


def test_scheduler_hooks_and_trigger_follow_the_same_rule(myapp: BenchHandle, tmp_path: Path) -> None:
    pwned = tmp_path / "pwned.txt"
    (myapp.root / "apps" / "myapp" / "hooks.py").write_text(
        'scheduler_events = {"all": ["myapp.tasks.os.system", "myapp.tasks.hello"]}\n'
        'before_job = ["myapp.tasks.subprocess.run"]\n'
    )
    site = ("--site", "site1.local")
    status = myapp.run(*site, "scheduler", "status", "-v", "-f", "json")
    assert "myapp.tasks.os.system" in status.stdout and "refused" in status.stdout, status.stdout
    line = one_line_error(myapp.run(*site, "trigger-scheduler-event", "myapp.tasks.os.system"))
    assert "does not exist" in line
    triggered = myapp.run(*site, "trigger-scheduler-event", "all", "-f", "json")
    methods = {run["method"] for run in json.loads(triggered.stdout)["runs"]}
    assert "myapp.tasks.hello" in methods and "myapp.tasks.os.system" not in methods
    # A hooks.py naming an attribute walk as a job hook fails the job visibly; nothing runs it.
    job = myapp.enqueue("myapp.tasks.hello", name="x")
    assert myapp.run("worker", "--burst", timeout=90).returncode == 0
    assert "refused" in failed_records(myapp)[job.id]["exception"]
    assert not pwned.exists()


def test_forged_messages_are_refused_by_the_worker_and_recorded(myapp: BenchHandle, tmp_path: Path) -> None:
    pwned = tmp_path / "pwned.txt"
    rt = myapp.rt()
    task = rt.app.tasks["benchcelery.execute_job"]
    for i, method in enumerate(["myapp.tasks.os.system", "jobs_demo.tasks.__loader__.get_data"]):
        task.apply_async(
            kwargs={"command": f"id > {pwned}"} if i == 0 else {"path": str(pwned)},
            queue="default",
            task_id=f"site1.local::forged{i}",
            headers={"site": "site1.local", "method": method},
        )
    # An argument named like execute_job's own parameter reaches the method (which fails, recorded).
    rt.app.send_task(  # send_task: no client-side signature check, as a forger would
        "benchcelery.execute_job",
        kwargs={"task": 1},
        queue="default",
        task_id="site1.local::clash",
        headers={"site": "site1.local", "method": "myapp.tasks.hello"},
    )
    # Row 10: Celery's built-in tasks are not ours to run.
    rt.app.send_task("celery.accumulate", args=[1], queue="default", task_id="site1.local::accumulate")
    rt.app.send_task("celery.chord_unlock", args=["x", {}], queue="default", task_id="site1.local::unlock")
    myapp.enqueue("testapp.tasks.record", key="alive", value="yes")
    result = myapp.run("worker", "--burst", timeout=90)
    assert result.returncode == 0, result.stderr
    assert myapp.results("alive") == ["yes"]
    assert not pwned.exists()
    records = failed_records(myapp)
    assert "refused" in records["site1.local::forged0"]["exception"]
    assert "refused" in records["site1.local::forged1"]["exception"]
    assert "unexpected keyword argument" in records["site1.local::clash"]["exception"]
    for job_id in ("site1.local::accumulate", "site1.local::unlock"):
        assert "Unknown task" in records[job_id]["exception"], records.get(job_id)


def test_app_names_shadowing_importable_modules_are_refused(bench: BenchHandle) -> None:
    for name in ("os", "json", "subprocess", "celery", "redis", "benchcelery"):
        assert "shadows" in one_line_error(bench.run("new-app", name))
    assert bench.bench.apps() == ["jobs_demo", "testapp"]
    assert not (bench.root / "apps" / "os").exists()


def test_error_messages_cap_what_they_echo(bench: BenchHandle) -> None:
    huge = "a." + "b" * 100_000
    line = one_line_error(bench.run("--site", "site1.local", "enqueue", huge))
    assert len(line) < 400
    for args in (("jobs", "show", huge), ("trigger-scheduler-event", huge), ("use", huge)):
        line = one_line_error(bench.run("--site", "site1.local", *args))
        assert len(line) < 700, args
    line = one_line_error(bench.run("--site", huge, "show-pending-jobs"))
    assert len(line) < 700
    with pytest.raises(ValidationError) as info:
        bench.enqueue("x" * 50_000)
    assert len(str(info.value)) < 400


# --- row 9: --kwargs are only the job's arguments ----------------------------------------------------
@pytest.mark.parametrize("key", ["now", "queue", "timeout", "task", "self", "job_id", "on_success", "is_async"])
def test_kwargs_clashing_with_enqueue_parameters_are_refused(bench: BenchHandle, key: str) -> None:
    kwargs = json.dumps({"message": "x", key: True})
    line = one_line_error(bench.run("--site", "site1.local", "enqueue", "jobs_demo.tasks.say", "--kwargs", kwargs))
    assert key in line and "--kwargs" in line
    assert not bench.redis.keys(f"{bench.prefix}*")
    assert not (bench.root / "logs" / "jobs_demo.log").exists()  # `now` did not run it in the CLI


def test_kwargs_named_like_enqueue_parameters_are_refused_in_python(bench: BenchHandle) -> None:
    from benchcelery.jobs.enqueue import enqueue_many

    benchcelery.init(site="site1.local", bench_path=str(bench.root))
    with pytest.raises(ValidationError, match="task"):
        enqueue_many([{"method": "jobs_demo.tasks.say", "kwargs": {"message": "x", "task": 1}}])
    with pytest.raises(ValidationError, match="self"):
        benchcelery.enqueue("jobs_demo.tasks.say", message="x", self=1)
    assert not bench.redis.keys(f"{bench.prefix}*")


# --- rows 4, 5, 6: a bench's Redis ACL user is confined ----------------------------------------------
@pytest.fixture
def acl_bench(tmp_path: Path) -> Iterator[tuple[BenchHandle, redis.Redis]]:
    """A bench in a path with '?', '*' and spaces (its derived bench id must be sanitised), with
    its ACL users from `bench create-rq-users --use-rq-auth` loaded by its own real Redis."""
    handle = bench_on_free_port(tmp_path / "b? *x y")
    port = handle.port
    handle.set_config(bench_id=None)  # derived from the path
    bench_id = handle.bench.bench_id
    assert bench_id.endswith("-b---x-y"), bench_id  # '?', '*' and spaces became '-'

    result = handle.run("create-rq-users", "--use-rq-auth")
    assert result.returncode == 0, result.stderr
    # `bench run-redis` execs redis-server with config/redis_queue.conf alone: its dir, pidfile and
    # aclfile paths (with '?', '*' and spaces) must be quoted for Redis to start at all.
    server = handle.start("run-redis")
    try:
        wait_until(lambda: is_listening(port) or server.poll() is not None, 20, what="bench run-redis")
        assert server.poll() is None, handle.output(server)
        yield handle, redis.Redis(port=port)  # the admin: the default user (nopass)
    finally:
        handle.stop_all()
        reset_runtime()


FORBIDDEN = [
    ("FLUSHALL",),
    ("FLUSHDB",),
    ("SWAPDB", "0", "5"),
    ("KEYS", "*"),
    ("SCAN", "0"),
    ("RANDOMKEY",),
    ("DBSIZE",),
    ("INFO", "keyspace"),
    ("CONFIG", "GET", "*"),
    ("CONFIG", "SET", "dir", "/tmp"),
    ("DEBUG", "SLEEP", "0"),
    ("SHUTDOWN", "NOSAVE"),
    ("MONITOR",),
    ("CLIENT", "KILL", "ID", "1"),
    ("CLIENT", "LIST"),
    ("SCRIPT", "FLUSH"),
    ("FUNCTION", "FLUSH"),
    ("PUBSUB", "CHANNELS"),
    ("ACL", "LIST"),
    ("SLOWLOG", "GET"),
    ("BGSAVE",),
    ("REPLICAOF", "127.0.0.1", "1"),
    ("GET", "bc:other:secret"),
    ("SET", "unprefixed", "1"),
    ("PUBLISH", "events", "{}"),
    ("PUBLISH", "bc:other:realtime", "{}"),
    ("SUBSCRIBE", "events"),
    ("SUBSCRIBE", "bc:other:realtime"),
    ("PSUBSCRIBE", "*"),
]


def test_acl_user_is_confined_and_runs_every_bench_command(acl_bench: tuple[BenchHandle, redis.Redis]) -> None:
    handle, admin = acl_bench
    conf = handle.bench.common_config()
    user, password = conf["rq_username"], conf["rq_password"]
    mine = redis.Redis(port=admin.connection_pool.connection_kwargs["port"], username=user, password=password)
    admin.execute_command("ACL", "SETUSER", *bench_acl_line("other", "other-pw").split()[1:])
    admin.set("bc:other:secret", "theirs")
    mine.set(f"bc:{user}:x", 1)
    for command in [*FORBIDDEN, ("MOVE", f"bc:{user}:x", "5"), ("SORT", f"bc:{user}:x")]:
        # Redis' own verdict for the user, then the command really tried as the user.
        verdict = admin.execute_command("ACL", "DRYRUN", user, *command)
        assert verdict != b"OK" and b"no permissions" in verdict, (command, verdict)
        with pytest.raises(redis.exceptions.ResponseError) as refused:
            mine.execute_command(*command)
        assert isinstance(refused.value, redis.exceptions.NoPermissionError) or command[0] == "DEBUG", command
    assert admin.get("bc:other:secret") == b"theirs" and admin.ping()
    # What issue 10's delivery path (Lua, atomic moves) and issue 16's durable enqueue need stays allowed.
    k = f"bc:{user}:q"
    for command in [
        ("EVAL", "return 1", "1", k),
        ("EVALSHA", "e0e1f9fabfc9d4800c877a703b823ac0578ff8db", "1", k),
        ("SCRIPT", "LOAD", "return 1"),
        ("SCRIPT", "EXISTS", "e0e1f9fabfc9d4800c877a703b823ac0578ff8db"),
        ("BLMOVE", k, f"{k}:b", "RIGHT", "LEFT", "1"),
        ("LMOVE", k, f"{k}:b", "RIGHT", "LEFT"),
        ("BRPOPLPUSH", k, f"{k}:b", "1"),
        ("ZADD", k + "z", "1", "m"),
        ("ZRANGEBYSCORE", k + "z", "0", "1"),
        ("WAIT", "0", "0"),
        ("SELECT", "0"),
        ("PSUBSCRIBE", f"bc:{user}:/0.celery.pidbox"),
        ("PUBLISH", f"bc:{user}:realtime", "{}"),
    ]:
        assert admin.execute_command("ACL", "DRYRUN", user, *command) == b"OK", command
    # Row 5: another bench's user can neither read nor inject this bench's realtime events.
    other = redis.Redis(port=admin.connection_pool.connection_kwargs["port"], username="other", password="other-pw")
    channel = handle.rt().keys.realtime_channel
    for command in (("SUBSCRIBE", channel), ("PUBLISH", channel, "{}")):
        with pytest.raises(redis.exceptions.NoPermissionError):
            other.execute_command(*command)

    # ... and everything a bench does works as that user (no command refused: ACL LOG stays empty).
    admin.execute_command("ACL", "LOG", "RESET")
    site = ("--site", "site1.local")
    enqueued = handle.run(*site, "enqueue", "jobs_demo.tasks.say", "--kwargs", '{"message": "acl-ok"}')
    assert enqueued.returncode == 0, enqueued.stderr
    pending = handle.run(*site, "show-pending-jobs", "-f", "json")
    assert pending.returncode == 0, pending.stderr
    assert json.loads(pending.stdout)["total"]["pending"] == 1
    assert handle.run(*site, "trigger-scheduler-event", "all").returncode == 0
    assert handle.run(*site, "publish-realtime", "ev", "--message", "1").returncode == 0
    schedule = handle.start("schedule")
    wait_until(lambda: admin.exists(handle.rt().keys.scheduler_heartbeat), 60, what="scheduler heartbeat")
    result = handle.run("worker", "--burst", timeout=120)
    assert result.returncode == 0, result.stderr
    assert "acl-ok" in (handle.root / "logs" / "jobs_demo.log").read_text()
    assert handle.run(*site, "jobs", "list").returncode == 0
    schedule.terminate()
    denied = [entry for entry in admin.acl_log() if str(entry.get("username")) == user]
    assert denied == [], denied
    # doctor tries INFO and CONFIG GET (refused to the user) and reports without them.
    result = handle.run(*site, "doctor", "--no-db")
    assert result.returncode in (0, 1) and "Traceback" not in result.stderr, result.stderr
    assert "INFO is not permitted to this ACL user" in result.stdout and "maxmemory-policy ," not in result.stdout


def test_bench_id_alphabet_and_quoted_files(bench: BenchHandle, tmp_path: Path) -> None:
    from benchcelery.bench.layout import derive_bench_id

    assert derive_bench_id(tmp_path / "a b" / "c?*[d]").endswith("-a-b-c---d")
    for bad in ("tmp-b?", "a*", "has space", "x:y", "", "-lead", "a" * 200):
        bench.set_config(bench_id=None)
        (bench.root / "sites" / "common_site_config.json").write_text(
            json.dumps({**bench.bench.common_config(), "bench_id": bad})
        )
        line = one_line_error(bench.run("--site", "site1.local", "show-pending-jobs"))
        assert "common_site_config.json: bench_id" in line, line
    with pytest.raises(ValidationError):
        bench_acl_line("tmp-b?", "pw")


# --- row 7: secrets are masked in every format --------------------------------------------------------
def test_show_config_masks_secrets_in_text_and_json(bench: BenchHandle) -> None:
    port = bench.url.rsplit(":", 1)[1]
    bench.set_config(rq_password="rq-pw-1", redis_cache=f"redis://cacheuser:url-pw-2@127.0.0.1:{port}/1")
    bench.set_config(site="site1.local", db_password="db-pw-3", realtime_secret="rt-secret-4", api_token="tok-5")
    bench.set_config(flower_basic_auth=["admin:fl-pw-6"], use_rq_auth=True)
    secrets = ("rq-pw-1", "url-pw-2", "db-pw-3", "rt-secret-4", "tok-5", "fl-pw-6")
    for fmt in ("text", "json"):
        result = bench.run("--site", "site1.local", "show-config", "-f", fmt)
        assert result.returncode == 0, result.stderr
        assert not [s for s in secrets if s in result.stdout], result.stdout
        assert "cacheuser:***@" in result.stdout and "********" in result.stdout
        assert "use_rq_auth: True" in result.stdout or '"use_rq_auth": true' in result.stdout
    shown = bench.run("--site", "site1.local", "show-config", "-f", "json", "--show-secrets")
    assert all(s in shown.stdout for s in secrets)


# --- row 8: job commands act only on the selected site(s) ---------------------------------------------
def test_job_commands_stay_inside_the_selected_site(bench: BenchHandle) -> None:
    job = bench.enqueue("testapp.tasks.noop", site="site2.local")
    for args in (("jobs", "show", job.id), ("jobs", "delete", job.id), ("jobs", "cancel", job.id)):
        line = one_line_error(bench.run("--site", "site1.local", *args))
        assert "belongs to site site2.local" in line
    assert bench.run("--site", "site2.local", "jobs", "show", job.id).returncode == 0
    assert bench.run("--site", "all", "jobs", "show", job.id).returncode == 0
    result = bench.run("--site", "site1.local", "jobs", "retry", job.id)
    assert "belongs to site site2.local" in one_line_error(result)
    pending = json.loads(bench.run("--site", "site2.local", "show-pending-jobs", "-f", "json").stdout)
    assert pending["total"]["pending"] == 1  # nothing was deleted


# --- row 11: deploy files refuse values that would add lines --------------------------------------------
@pytest.mark.parametrize("kind", ["supervisor", "systemd"])
def test_setup_refuses_a_user_that_would_inject_lines(bench: BenchHandle, kind: str) -> None:
    evil = "root\n[program:evil]\ncommand=/bin/sh -c id\nExecStartPre=/bin/id"
    line = one_line_error(bench.run("setup", kind, "--user", evil, "--yes"))
    assert "--user" in line and "\n" not in line
    assert not (bench.root / "config" / "supervisor.conf").exists()
    assert not (bench.root / "config" / "systemd").exists()
    assert bench.run("setup", kind, "--user", "frappe", "--dry-run").returncode == 0


# --- rows 12, 13: configuration is typed and checked --------------------------------------------------
COMMON_CASES = [
    ({"workers": {"short": "x"}}, "workers short must be an object"),
    ({"workers": {"q": {"timeout": -5}}}, "workers q.timeout must be from 1"),
    ({"redis_queue": "redis://u:pw@host:abc/0"}, "redis_queue has a port that is not a number"),
    ({"redis_queue": 12}, "redis_queue must be a redis:// URL"),
    ({"redis_queue": "redis://127.0.0.1:6379/x"}, "redis_queue must end with a database number"),
    ({"job_lease": "x"}, "job_lease must be a whole number"),
    ({"job_lease": 1}, "job_lease must be from 3 to 3600"),
    ({"default_site": 5}, "default_site must be a site name"),
    ({"scheduler_interval": -1}, "scheduler_interval must be from 1"),
    ({"scheduler_interval": "x"}, "scheduler_interval must be a whole number"),
    ({"time_zone": "Nowhere/X"}, "time_zone is not a known time zone"),
    ({"allowed_methods": "os.system"}, "allowed_methods must be a list"),
    ({"allowed_methods": ["jobs_demo.__loader__.x"]}, "allowed_methods must be a list"),
    ({"max_redeliveries": True}, "max_redeliveries must be a whole number"),
]


@pytest.mark.parametrize(("values", "message"), COMMON_CASES)
def test_bad_config_values_are_one_line_naming_file_and_key(bench: BenchHandle, values: dict, message: str) -> None:
    path = bench.root / "sites" / "common_site_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **values}))
    line = one_line_error(bench.run("--site", "site1.local", "show-pending-jobs"))
    assert line.startswith("sites/common_site_config.json: ") and message in line, line
    assert "pw" not in line.split(": ", 1)[1].replace("password", "")


def test_hostile_files_names_and_arguments(bench: BenchHandle) -> None:
    site_conf = bench.root / "sites" / "site1.local" / "site_config.json"
    site_conf.write_bytes(b'{"marker": "\xff\xfe"}')
    line = one_line_error(bench.run("--site", "site1.local", "show-config"))
    assert "site1.local/site_config.json is not UTF-8" in line
    site_conf.write_text("{}")
    line = one_line_error(bench.run("new-site", "s" * 300))
    assert "Invalid site name" in line and len(line) < 400
    assert "Invalid site name" in one_line_error(bench.run("new-site", "a.."))
    deep = '{"a": ' * 10_000 + "1" + "}" * 10_000
    line = one_line_error(
        bench.run("--site", "site1.local", "enqueue", "jobs_demo.tasks.say", "--kwargs", deep), code=2
    )
    assert "--kwargs" in line
    line = one_line_error(bench.run("worker-pool", "--num-workers", "10000", "--burst"), code=2)
    assert "1<=x<=256" in line or "256" in line
    assert "Config key" in one_line_error(bench.run("set-config", "-g", "", "v"))
    assert "time_zone" in one_line_error(bench.run("set-config", "-g", "time_zone", "Nowhere/X"))
    assert "time_zone" not in bench.bench.common_config()
    assert not bench.redis.keys(f"{bench.prefix}*")
    for args in (("init", str(bench.root.parent / "x"), "--redis-url", "redis://h:abc/0"), ("init", "a\nb")):
        assert one_line_error(bench.run(*args))
    assert not (bench.root.parent / "x").exists() and not (bench.root / "a\nb").exists()


# --- row 14: realtime rooms are joined only with permission --------------------------------------------
def test_realtime_rooms_need_ownership_public_declaration_or_an_app_hook(bench: BenchHandle) -> None:
    relay = Relay(bench)
    clients: list[Client] = []
    try:
        alice = connect(clients, relay, "site1.local", "alice@x.com")
        assert alice.call("doc_subscribe", "User", "bob@x.com") is None
        assert alice.call("task_subscribe", "bob@x.com-42") is None
        assert alice.call("doctype_subscribe", "Announcement") is None
        assert alice.call("doc_subscribe", "User", "alice@x.com") == "doc:User/alice@x.com"  # her own
        assert alice.call("task_subscribe", "alice@x.com-1") == "task_progress:alice@x.com-1"  # the app's hook
        assert alice.call("doc_subscribe", "ToDo", "T1") == "doc:ToDo/T1"  # the app's hook
        bench.set_config(site="site1.local", realtime_public_rooms=["doctype:Announce*"])
        assert alice.call("doctype_subscribe", "Announcement") == "doctype:Announcement"
        publish(bench, "site1.local", "bobs_doc", "--doctype", "User", "--docname", "bob@x.com")
        publish(bench, "site1.local", "sentinel")
        alice.wait_for("sentinel")
        assert "bobs_doc" not in alice.names()
        # Row 5: an event on the bench's channel that names no bench, or another, is dropped.
        channel = bench.rt().keys.realtime_channel
        wire = {"event": "forged", "message": 1, "room": "all", "namespace": "site1.local"}
        bench.redis.publish(channel, json.dumps(wire))
        bench.redis.publish(channel, json.dumps({**wire, "bench": "another"}))
        bench.redis.publish("events", json.dumps({**wire, "bench": bench.bench.bench_id}))
        publish(bench, "site1.local", "sentinel2")
        alice.wait_for("sentinel2")
        assert "forged" not in alice.names()
        assert token(bench, "site1.local", "alice@x.com")
    finally:
        for client in clients:
            client.close()


# --- row 15: the console's frappe.cache() is not the queue ---------------------------------------------
def test_console_cache_is_not_the_queue_and_flushing_the_queue_is_refused(bench: BenchHandle) -> None:
    bench.enqueue("testapp.tasks.noop")
    script = "\n".join(
        [
            "frappe.cache().set('cache-key', 'v')",
            "print('cache db', frappe.cache().connection_pool.connection_kwargs['db'])",
            "frappe.cache().flushall()  # the guide's line: clears the cache's database only",
            "print('cache key after flushall', frappe.cache().get('cache-key'))",
            "frappe.cache().execute_command('FLUSHALL')",
            "from frappe.utils.background_jobs import get_redis_conn",
            "get_redis_conn().flushdb()",
            "get_redis_conn().flushall()",
            "print('done')",
            "",
        ]
    )
    result = bench.run("--site", "site1.local", "console", input=script)
    assert "cache db 1" in result.stdout and "done" in result.stdout, result.stdout + result.stderr
    assert "cache key after flushall None" in result.stdout
    assert result.stderr.count("BenchError: FLUSH") == 3, result.stderr
    pending = json.loads(bench.run("--site", "site1.local", "show-pending-jobs", "-f", "json").stdout)
    assert pending["total"]["pending"] == 1
    assert redis.Redis(port=bench.redis.connection_pool.connection_kwargs["port"], db=1).get("cache-key") is None


# --- issue 22: one forged message never stops a queue -------------------------------------------------
FORGED_HEADERS = [
    ("id", {"a": 1}),
    ("id", ["a"]),
    ("task", ["x"]),
    ("timelimit", 5),
    ("timelimit", ["a", "b"]),
    ("timelimit", [1e308, None]),
    ("retries", "x"),
    ("eta", "abc"),
    ("expires", 12),
    ("stamped_headers", ["nope"]),
    ("method", ["x"]),
    ("site", {"s": 1}),
    ("enqueued_at", "abc"),
]


def test_forged_header_types_are_recorded_and_never_stop_a_worker(bench: BenchHandle) -> None:
    """Row 1: each of these made the worker exit ("Unrecoverable error"), and every restart too."""
    rt = bench.rt()
    for i, (name, value) in enumerate(FORGED_HEADERS):
        message = valid_message(rt, key="forged", value=i)
        message["headers"][name] = value
        push(bench.redis, rt.keys, "default", json.dumps(message))
    priority = valid_message(rt, key="forged", value="priority")
    priority["properties"]["priority"] = "high"
    push(bench.redis, rt.keys, "default", json.dumps(priority))
    bench.enqueue("testapp.tasks.record", key="alive", value="yes")
    result = bench.run("worker", "--burst", timeout=90)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Unrecoverable error" not in result.stderr
    assert bench.results("alive") == ["yes"] and bench.results("forged") == []
    reasons = [r["exception"] for r in failed_records(bench).values()]
    assert len(reasons) == len(FORGED_HEADERS) + 1 and all("Malformed message" in r for r in reasons), reasons
    assert any("header 'id' must be str" in r for r in reasons)


def test_embedded_chain_and_callbacks_are_never_published(bench: BenchHandle) -> None:
    """Row 11: a forged message's chain/callbacks used to be published by the worker."""
    rt = bench.rt()
    inner = valid_message(rt, key="amplified", value="inner")
    signature = {
        "task": "benchcelery.execute_job",
        "args": [],
        "kwargs": {"key": "amplified", "value": "callback"},
        "options": {"queue": "default", "headers": inner["headers"]},
        "subtask_type": None,
        "immutable": True,
    }
    accumulate = {"task": "celery.accumulate", "args": [1], "kwargs": {}, "options": {}, "immutable": True}
    for name, embedded in (("callbacks", [signature]), ("chain", [signature, accumulate]), ("errbacks", [signature])):
        message = valid_message(rt, key="carrier", value=name)
        message["headers"]["id"] = f"site1.local::{name}"
        body = [[], {"key": "carrier", "value": name}, {"callbacks": None, "errbacks": None, "chain": None}]
        body[2][name] = embedded
        push(bench.redis, rt.keys, "default", json.dumps(set_body(message, body)))
    assert bench.run("worker", "--burst", timeout=90).returncode == 0
    assert bench.results("amplified") == [] and bench.results("carrier") == []
    reasons = " | ".join(r["exception"] for r in failed_records(bench).values())
    for name in ("callbacks", "chain", "errbacks"):
        assert f"embeds {name}" in reasons, reasons
    waiting = inspect.waiting_lists(bench.redis, rt.keys, "default")
    assert sum(bench.redis.llen(k) for k in waiting) == 0  # nothing was published


def _unreadable_elements(rt: Any) -> list[str]:
    out = [
        json.dumps(set_body(valid_message(rt, key="deep"), f"[[], {{\"a\": {nested(200_000)}}}, {{}}]")),
        nested(200_000),
    ]
    for i, (name, value) in enumerate((("enqueued_at", "abc"), ("enqueued_at", 1e308), ("method", ["x"]))):
        message = valid_message(rt, key="bad")
        message["headers"][name] = value
        message["headers"]["id"] = f"site1.local::bad{i}"
        out.append(json.dumps(message))
    return out


def test_unreadable_elements_are_one_row_in_read_commands_and_pages(bench: BenchHandle) -> None:
    """Row 5: these made `jobs list`, `show-pending-jobs -v` and the dashboard fail (traceback, 500)."""
    from tests.test_dashboard import Dashboard, Session, make_token

    rt = bench.rt()
    elements = _unreadable_elements(rt)
    for element in elements:
        push(bench.redis, rt.keys, "default", element)
    listed = bench.run("--site", "site1.local", "jobs", "list", "--state", "queued")
    assert listed.returncode == 0 and "Traceback" not in listed.stderr, listed.stderr[-2000:]
    assert listed.stdout.count("[unreadable]") == len(elements), listed.stdout
    shown = bench.run("--site", "site1.local", "show-pending-jobs", "-v")
    assert shown.returncode == 0 and "Traceback" not in shown.stderr, shown.stderr[-2000:]
    as_json = bench.run("--site", "site1.local", "jobs", "list", "-f", "json")
    assert as_json.returncode == 0, as_json.stderr[-2000:]
    make_token(bench)
    session = Session(Dashboard(bench))
    session.login(make_token(bench))
    pages = ["/jobs?site=site1.local&queue=default", "/failed", "/"]
    pages += [f"/job?id=site1.local::bad{i}" for i in range(3)]
    for path in pages:
        status, body, _ = session.request(path)
        assert status == 200, (path, body[-2000:])
    assert "[unreadable]" in session.request("/jobs?site=site1.local&queue=default")[1]
    # A worker records each as failed (visible, with its text cut to RAW_CAP) and goes on.
    bench.enqueue("testapp.tasks.record", key="alive", value="yes")
    assert bench.run("worker", "--burst", timeout=90).returncode == 0
    assert bench.results("alive") == ["yes"]
    records = failed_records(bench)
    assert len(records) == len(elements) and all(len(r.get("raw") or "") <= 4000 for r in records.values())
    for path in ("/failed", "/"):
        assert session.request(path)[0] == 200


def test_failure_records_are_capped(bench: BenchHandle) -> None:
    """Row 7: a failing job with 10 MiB of arguments wrote a ~31 MB record (kwargs, exception, traceback)."""
    from benchcelery.jobs import failures

    huge = "A" * (10 * 1024 * 1024)
    job = bench.enqueue("testapp.tasks.fail", message=huge)
    assert bench.run("worker", "--burst", timeout=120).returncode == 0
    raw = bench.redis.hget(bench.rt().keys.failed_data("default"), job.id)
    assert raw is not None and len(raw) < 100_000, len(raw or b"")
    rec = json.loads(raw)
    assert rec["kwargs"] is None and rec["kwargs_cut"].startswith('{"message": "AAAA')
    assert len(rec["exception"]) <= failures.EXCEPTION_CAP + 40 and rec["exception"].startswith("ValueError: AAA")
    tb = rec["traceback"]
    assert tb.startswith("Traceback (most recent call last)") and "characters cut" in tb
    assert tb.rstrip().endswith("A") and "raise ValueError(message)" in tb  # its head and its tail
    assert "cannot retry" in bench.run("--site", "site1.local", "jobs", "retry", job.id).stderr.lower()
    # Small records are whole.
    small = bench.enqueue("testapp.tasks.fail", message="short")
    assert bench.run("worker", "--burst", timeout=120).returncode == 0
    assert failed_records(bench)[small.id]["kwargs"] == {"message": "short"}


def _crashing_worker(bench: BenchHandle, mode: str, target: str) -> subprocess.Popen[bytes]:
    import os
    import sys

    script = str(Path(__file__).parent / "crashing_worker.py")
    env = bench.env(CRASH_ON=target, CRASH_MODE=mode, PYTHONPATH=str(Path(__file__).parent.parent))
    log = open(bench.root / "logs" / f"crash-{len(bench.procs)}.log", "wb")  # noqa: SIM115 - kept by the child
    proc = subprocess.Popen(
        [sys.executable, script], cwd=bench.root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    proc.log_path = log.name  # type: ignore[attr-defined]
    bench.procs.append(proc)
    assert os.path.exists(script)
    return proc


@pytest.mark.parametrize(("mode", "limit"), [("raise", 1), ("exit", 0)])
def test_a_message_that_kills_its_worker_is_failed_after_max_redeliveries(
    bench: BenchHandle, mode: str, limit: int
) -> None:
    """Row 1, by construction: whatever makes a worker die on a message (an exception at
    decode/strategy time, or the process ending at once), the message is counted per crash and
    failed past max_redeliveries instead of being handed out again."""
    bench.set_config(max_redeliveries=limit, job_lease=3)
    rt = bench.rt()
    target = "site1.local::crashme"
    message = valid_message(rt, key="crash", value="ran")
    message["headers"]["id"] = message["headers"]["root_id"] = message["properties"]["correlation_id"] = target
    push(bench.redis, rt.keys, "default", json.dumps(message))
    bench.enqueue("testapp.tasks.record", key="after", value="alive")
    exits = 0
    proc = _crashing_worker(bench, mode, target)

    def settled() -> bool:
        nonlocal proc, exits
        if proc.poll() is not None:
            exits += 1
            assert exits <= limit + 1, f"worker died {exits} times:\n{bench.output(proc)[-3000:]}"
            proc = _crashing_worker(bench, mode, target)
        return bool(bench.results("after"))

    wait_until(settled, 90, interval=0.2, what="the job behind the crashing message to run")
    assert exits == limit + 1, exits
    record = wait_until(lambda: failed_records(bench).get(target), 20, what="the crashing message's record")
    assert "Not run again" in record["exception"] and record["kwargs"] == {"key": "crash", "value": "ran"}
    assert record.get("raw"), record  # failed by the worker's main process, before Celery took it
    assert record["method"] == "testapp.tasks.record" and record["site"] == "site1.local"
    assert bench.results("crash") == [] and proc.poll() is None
    retried = bench.run("--site", "site1.local", "jobs", "retry", target)
    assert retried.returncode == 0, retried.stderr
