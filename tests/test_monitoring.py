"""Monitoring: Flower on a bench, `bench metrics`, events on workers, what Celery's control tools see."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from base64 import b64encode
from pathlib import Path
from typing import Any

from benchcelery.store.server import free_port
from tests.conftest import BenchHandle, wait_until

S1, S2 = ("--site", "site1.local"), ("--site", "site2.local")
CELERY_BIN = str(Path(sys.executable).parent / "celery")


def celery(bench: BenchHandle, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CELERY_BIN, "-A", "benchcelery.app", *args],
        cwd=cwd or bench.root,
        capture_output=True,
        text=True,
        timeout=60,
        env=bench.env(),
    )


def get(url: str, auth: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", "Basic " + b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    except OSError:
        return 0, ""


def samples(text: str) -> dict[str, float]:
    """Prometheus exposition -> {'name{labels}': value}."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def worker_name(bench: BenchHandle) -> str:
    rt = bench.rt()
    return str(wait_until(lambda: bench.redis.zrange(rt.keys.workers, 0, -1), what="worker heartbeat")[0].decode())


def test_flower_shows_workers_tasks_and_queue_lengths(bench: BenchHandle) -> None:
    auth = "admin:s3cret"
    port = free_port()
    bench.set_config(flower_basic_auth=auth)
    bench.start("worker", "--events")
    name = worker_name(bench)
    bench.start("worker", "--queue", "long")  # no --events: Flower switches them on at run time
    rt = bench.rt()
    wait_until(lambda: bench.redis.zcard(rt.keys.workers) == 2, what="second worker")
    quiet = next(n.decode() for n in bench.redis.zrange(rt.keys.workers, 0, -1) if n.decode() != name)
    flower = bench.start("flower", "--port", str(port))
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: get(f"{base}/healthcheck")[0] == 200, timeout=30, what="Flower up")
    assert get(f"{base}/api/workers")[0] == 401  # authentication from config
    assert auth not in " ".join(Path(f"/proc/{flower.pid}/cmdline").read_text().split("\0"))

    def status() -> dict[str, bool]:
        return dict(json.loads(get(f"{base}/api/workers?status=1", auth)[1] or "{}"))

    # Flower receives events once it shows the --events worker (its heartbeats) online.
    wait_until(lambda: status().get(name), timeout=30, what="Flower receiving events")

    # A job holds the single worker while others wait: Flower's queue lengths match ours.
    bench.enqueue("testapp.tasks.wait_for_flag", queue="short", key="held", flag="go")
    wait_until(lambda: _started(bench), what="held job started")
    for site in ("site1.local", "site2.local"):
        bench.enqueue("testapp.tasks.noop", site=site, queue="default")
        bench.enqueue("testapp.tasks.fail", site=site, queue="default")

    def pending() -> dict[str, int]:
        ours = json.loads(bench.run("--site", "all", "show-pending-jobs", "-f", "json").stdout)
        return {q["name"]: q["pending"] for q in ours["queues"]}

    # The worker may hold one of them ahead for a moment (worker/lookahead.py): behind a long job it
    # goes back to its queue.
    ours = wait_until(lambda: (counts := pending())["default"] == 4 and counts, what="4 jobs waiting")
    lengths = json.loads(get(f"{base}/api/queues/length", auth)[1])["active_queues"]
    assert {q["name"]: q["messages"] for q in lengths} == ours

    assert get(f"{base}/broker", auth)[0] == 200  # a redis:// broker Flower knows

    bench.redis.set("test:go", 1)
    wait_until(lambda: bench.redis.zcard(rt.keys.failed("default")) == 2, what="two failures")

    def tasks() -> dict[str, Any]:
        data = json.loads(get(f"{base}/api/tasks", auth)[1] or "{}")
        return data if len([t for t in data.values() if t["state"] in ("SUCCESS", "FAILURE")]) == 5 else {}

    seen = wait_until(tasks, timeout=30, what="five finished tasks in Flower")
    by_name: dict[tuple[str, str], int] = {}
    for task in seen.values():
        site = task["uuid"].split("::")[0]
        assert f"site='{site}'" in task["args"]  # site and queue shown in Flower's args column
        by_name[(task["name"], task["state"])] = by_name.get((task["name"], task["state"]), 0) + 1
    assert by_name == {
        ("testapp.tasks.wait_for_flag", "SUCCESS"): 1,
        ("testapp.tasks.noop", "SUCCESS"): 2,
        ("testapp.tasks.fail", "FAILURE"): 2,
    }
    assert {t["uuid"].split("::")[0] for t in seen.values() if t["name"] == "testapp.tasks.noop"} == {
        "site1.local",
        "site2.local",
    }

    # Both online: workers send event heartbeats while task events are on, however they were switched on.
    wait_until(lambda: status() == {name: True, quiet: True}, timeout=30, what="both workers online in Flower")


def _started(bench: BenchHandle) -> bool:
    from benchcelery.jobs.inspect import started_jobs

    return bool(started_jobs(bench.redis, bench.rt().keys))


def test_flower_refuses_unauthenticated_public_address(bench: BenchHandle) -> None:
    result = bench.run("flower", "--address", "0.0.0.0", "--port", str(free_port()))
    assert result.returncode == 1
    assert result.stderr.strip().startswith("Refusing to serve Flower on 0.0.0.0 without authentication")
    assert "Traceback" not in result.stderr
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        taken = bench.run("flower", "--port", str(port))
    assert taken.returncode == 1
    assert taken.stderr.strip() == f"Cannot listen on 127.0.0.1:{port}: Address already in use"


def test_worker_events_controls_and_live_queues(bench: BenchHandle) -> None:
    """A worker without --events: enable_events works at run time, heartbeats follow the consumed
    queues, per-method limits are answered clearly, control replies never count as pending."""
    bench.start("worker")
    name = worker_name(bench)
    rt = bench.rt()

    enabled = celery(bench, "control", "enable_events", "-d", name)
    assert enabled.returncode == 0 and "task events enabled" in enabled.stdout, enabled.stdout + enabled.stderr
    limit = celery(bench, "control", "rate_limit", "testapp.tasks.noop", "1/m", "-d", name)
    assert "every bench job runs as the task benchcelery.execute_job" in limit.stdout
    assert "rate_limits in common_site_config.json" in limit.stdout and "unknown task" not in limit.stdout
    timed = celery(bench, "control", "time_limit", "testapp.tasks.noop", "10", "-d", name)
    assert "timeout=S" in timed.stdout

    cancel = celery(bench, "control", "cancel_consumer", "long", "-d", name)
    assert "no longer consuming from long" in cancel.stdout

    def queues() -> list[str]:
        raw = bench.redis.hget(rt.keys.worker(name), "queues")
        return json.loads(raw) if raw else []

    wait_until(lambda: queues() == ["default", "short"], timeout=25, what="heartbeat without long")
    doctor = json.loads(bench.run(*S1, "doctor", "--no-db", "-f", "json").stdout)
    assert doctor["sites"][0]["workers"] == {"short": 1, "default": 1, "long": 0}

    # Each control call above used a reply queue; none of it shows up as a queue or as pending jobs.
    scrape = bench.run("metrics", "--once").stdout
    assert "pidbox" not in scrape and 'queue="' in scrape
    assert "pidbox" not in bench.run("--site", "all", "show-pending-jobs", "-f", "json").stdout


def test_control_replies_leave_no_lasting_keys(bench: BenchHandle) -> None:
    """`celery inspect`/`control` (and Flower's polling) must not leave keys behind for ever."""
    bench.start("worker", "--queue", "short")
    name = worker_name(bench)
    assert celery(bench, "inspect", "ping", "-d", name).returncode == 0
    lasting = [k for k in bench.redis.keys(f"{bench.prefix}pending:*pidbox*") if bench.redis.ttl(k) == -1]
    assert lasting == []


def test_celery_outside_a_bench_is_one_line(bench: BenchHandle, tmp_path: Path) -> None:
    result = celery(bench, "inspect", "ping", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr
    assert "not being executed in bench directory" in result.stderr


def test_metrics_figures_per_site_and_queue(bench: BenchHandle) -> None:
    bench.enqueue("testapp.tasks.noop", site="site1.local", queue="short")
    bench.enqueue("testapp.tasks.fail", site="site2.local", queue="short")
    bench.run("worker", "--burst", "--queue", "short", timeout=90)
    first = bench.enqueue("testapp.tasks.noop", site="site1.local", queue="long")
    for _ in range(3):
        bench.enqueue("testapp.tasks.noop", site="site2.local", queue="long")
    rt = bench.rt()
    bench.redis.hset(rt.keys.recovered("long"), "site2.local", 2)  # as the delivery path counts them

    result = bench.run("metrics", "--once")
    assert result.returncode == 0, result.stderr
    m = samples(result.stdout)
    assert m["bench_up"] == 1
    assert m['bench_jobs_pending{queue="long",site="site1.local"}'] == 1
    assert m['bench_jobs_pending{queue="long",site="site2.local"}'] == 3
    assert m['bench_jobs_failed{queue="short",site="site2.local"}'] == 1
    assert m['bench_jobs_failed{queue="short",site="site1.local"}'] == 0
    assert m['bench_jobs_recovered_total{queue="long",site="site2.local"}'] == 2
    site1_age = m['bench_jobs_oldest_pending_age_seconds{queue="long",site="site1.local"}']
    site2_age = m['bench_jobs_oldest_pending_age_seconds{queue="long",site="site2.local"}']
    assert m['bench_queue_oldest_pending_age_seconds{queue="long"}'] == site1_age >= site2_age > 0
    assert site1_age < 60 and first.enqueued_at
    assert m['bench_queue_oldest_pending_age_seconds{queue="short"}'] == 0
    assert m['bench_job_duration_seconds_count{method="testapp.tasks.noop",queue="short"}'] == 1
    assert m['bench_job_duration_seconds_count{method="testapp.tasks.fail",queue="short"}'] == 1
    assert m['bench_job_duration_seconds_bucket{le="+Inf",method="testapp.tasks.noop",queue="short"}'] == 1
    assert m['bench_site_scheduler_state{site="site1.local",state="enabled"}'] == 1
    assert m["bench_scheduler_up"] == 0

    # The same figures in show-pending-jobs: oldest_age per queue, per-site breakdown for --site all.
    whole = json.loads(bench.run("--site", "all", "show-pending-jobs", "-f", "json").stdout)
    long_q = next(q for q in whole["queues"] if q["name"] == "long")
    assert long_q["oldest_age"] >= long_q["sites"]["site2.local"]["oldest_age"] > 0
    assert long_q["sites"]["site2.local"]["pending"] == 3
    one = json.loads(bench.run(*S2, "show-pending-jobs", "-f", "json").stdout)
    assert "sites" not in one["queues"][0] and one["queues"][2]["oldest_age"] > 0


def test_metrics_server_without_celery_and_with_workers(bench: BenchHandle) -> None:
    # Never imports Celery (or kombu): a standalone, light process.
    traced = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "benchcelery", "metrics", "--once"],
        cwd=bench.root,
        capture_output=True,
        text=True,
        timeout=60,
        env=bench.env(),
    )
    assert traced.returncode == 0, traced.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in traced.stderr.splitlines() if "|" in line}
    assert "prometheus_client" in imported
    assert not {m for m in imported if re.match(r"(celery|kombu|billiard)(\.|$)", m)}

    bench.start("worker", "--queue", "short,default")
    name = worker_name(bench)
    port = free_port()
    bench.start("metrics", "--port", str(port))
    url = f"http://127.0.0.1:{port}/metrics"
    text = wait_until(lambda: get(url)[1], timeout=20, what="metrics served")
    m = samples(text)
    host = name.rsplit("@", 1)[1]
    assert m[f'bench_worker_up{{host="{host}",worker="{name}"}}'] == 1
    assert m['bench_queue_workers{queue="short"}'] == 1 and m['bench_queue_workers{queue="long"}'] == 0
    assert m[f'bench_worker_last_heartbeat_age_seconds{{host="{host}",worker="{name}"}}'] < 15


def test_deploy_files_carry_events_and_metrics(bench: BenchHandle) -> None:
    from benchcelery.bench.config import Settings
    from benchcelery.deploy.files import render_procfile, render_supervisor, render_systemd

    bench.set_config(worker_send_task_events=True, metrics=True)
    settings = Settings.from_bench(bench.bench)
    procfile = next(iter(render_procfile(settings).values()))
    assert "\nworker: bench worker --events\n" in procfile + "\n" and "metrics: bench metrics" in procfile
    supervisor = next(iter(render_supervisor(settings).values()))
    assert re.search(r"command=\S+ worker --queue short --events", supervisor)
    assert re.search(r"\[program:[^\]]+-metrics\]\n(;.*\n)*command=\S+ metrics\n", supervisor)
    units = render_systemd(settings)
    metrics_unit = next(text for path, text in units.items() if path.name.endswith("-metrics.service"))
    assert re.search(r"ExecStart=\S+ metrics\n", metrics_unit)
    assert any("worker --queue long --events" in text for text in units.values())


def test_grafana_dashboard_and_alert_rules_use_exported_metrics() -> None:
    deploy = Path(__file__).resolve().parent.parent / "deploy"
    source = (Path(__file__).resolve().parent.parent / "benchcelery" / "diagnostics" / "exporter.py").read_text()
    exported = set(re.findall(r'"(bench_[a-z_]+)"', source))
    suffixes = ("_bucket", "_count", "_sum", "_total")
    known = exported | {name + s for name in exported for s in suffixes}
    dashboard = json.loads((deploy / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    rules = (deploy / "prometheus-alerts.yml").read_text()
    used = set(re.findall(r"\bbench_[a-z_]+", " ".join(exprs) + rules))
    assert used and used <= known, used - known
    for alert in ("BenchQueueOldestJobTooOld", "BenchNoWorkerForQueue", "BenchSchedulerNotTicking"):
        assert f"alert: {alert}" in rules
    assert "alert: BenchFailedJobsRising" in rules
