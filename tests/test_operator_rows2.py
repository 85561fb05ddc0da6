"""An operator's second week (rows 1, 3, 4, 8, 11): code reload in development, the cache following
the queue, a health probe with Redis down, scheduler numbers and outcomes that agree, one Redis log
name, logrotate, real origins. Real `bench` processes (the installed entry point), the session Redis,
the dashboard in headless Chromium where it is a page.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from benchcelery.store.server import free_port
from tests.conftest import BENCH_BIN, BenchHandle

S1 = ("--site", "site1.local")


def bench_cmd(cwd: Path, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([BENCH_BIN, *args], cwd=cwd, capture_output=True, text=True, timeout=60, input=input)


# --- row 3: frappe.cache() follows redis_queue unless the user set redis_cache ---------------------------
def test_the_cache_follows_the_queue_after_set_config(tmp_path: Path, bench: BenchHandle) -> None:
    made = bench_cmd(tmp_path, "init", "b", "--redis-url", f"redis://127.0.0.1:{free_port()}")
    assert made.returncode == 0, made.stderr
    root = tmp_path / "b"
    assert bench_cmd(root, "new-site", "s.local").returncode == 0
    moved = bench_cmd(root, "set-config", "-g", "redis_queue", bench.url)
    assert moved.returncode == 0, moved.stderr
    console = bench_cmd(root, "--site", "s.local", "console", input="print('PING', frappe.cache().ping())\n")
    assert "PING True" in console.stdout, (console.stdout, console.stderr)
    conf = json.loads((root / "sites" / "common_site_config.json").read_text())
    assert "redis_cache" not in conf

    # A bench made before: init's redis_cache (the old queue's next database) goes when the queue moves.
    old_queue = f"redis://127.0.0.1:{free_port()}"
    (root / "sites" / "common_site_config.json").write_text(
        json.dumps({**conf, "redis_queue": old_queue, "redis_cache": f"{old_queue}/1"})
    )
    moved = bench_cmd(root, "set-config", "-g", "redis_queue", bench.url)
    assert moved.stdout.strip() == "Removed redis_cache (written by bench init): frappe.cache() follows redis_queue"
    assert "redis_cache" not in json.loads((root / "sites" / "common_site_config.json").read_text())
    # One the user chose stays.
    mine = f"{bench.url}/5"
    assert bench_cmd(root, "set-config", "-g", "redis_cache", mine).returncode == 0
    assert bench_cmd(root, "set-config", "-g", "redis_queue", bench.url).stdout == ""
    console = bench_cmd(
        root,
        "--site",
        "s.local",
        "console",
        input="print('KW', frappe.cache().connection_pool.connection_kwargs['db'])\n",
    )
    assert "KW 5" in console.stdout, (console.stdout, console.stderr)


# --- row 11: mask only what exists; one Redis log name; logrotate; real origins --------------------------
def test_the_worker_banner_masks_only_a_password_that_exists(bench: BenchHandle) -> None:
    plain = bench.run("worker", "--burst", "--queue", "short")
    assert plain.returncode == 0, plain.stderr
    line = next(x for x in (plain.stdout + plain.stderr).splitlines() if "transport:" in x)
    assert line.split("transport:", 1)[1].strip().startswith(f"{bench.url}/"), line
    assert ":**@" not in plain.stdout + plain.stderr  # nor in "Connected to ..."
    # A password that exists is masked.
    from benchcelery.broker.celery_app import MaskedConnection

    assert MaskedConnection("redis://u:pw@h:1/0").as_uri() == "redis://u:**@h:1/0"
    assert MaskedConnection("redis://u@h:1/0").as_uri() == "redis://u@h:1/0"


def test_one_redis_log_name_in_development_and_production(bench: BenchHandle) -> None:
    from benchcelery.deploy.procfile import log_name

    supervisor = bench.run("setup", "supervisor", "--dry-run").stdout
    systemd = bench.run("setup", "systemd", "--dry-run").stdout
    assert f"{bench.root}/logs/redis-queue.log" in supervisor and f"{bench.root}/logs/redis-queue.log" in systemd
    assert "redis_queue.log" not in supervisor + systemd
    procfile = bench.run("setup", "procfile", "--dry-run").stdout
    assert "\nredis_queue: " in procfile and log_name("redis_queue") == "redis-queue"


def test_setup_logrotate_writes_a_config_logrotate_runs(bench: BenchHandle, tmp_path: Path) -> None:
    import shutil

    made = bench.run("setup", "logrotate", "--yes")
    assert made.returncode == 0, made.stderr
    conf = bench.root / "config" / "logrotate.conf"
    assert made.stdout.splitlines() == [
        "Wrote config/logrotate.conf",
        f'Install it: sudo ln -sf "{conf}" /etc/logrotate.d/bench-{bench.root.name}',
    ]
    text = conf.read_text()
    assert "copytruncate" in text and f'"{bench.root}/logs/*.log"' in text
    logrotate = shutil.which("logrotate") or "/usr/sbin/logrotate"
    if not Path(logrotate).exists():
        pytest.skip("logrotate is not installed (apt-get install logrotate; .ci/run installs it)")
    log = bench.root / "logs" / "worker.log"
    log.write_text("a line\n")
    ran = subprocess.run(
        [logrotate, "-f", "-s", str(tmp_path / "state"), str(conf)], capture_output=True, text=True, timeout=60
    )
    assert ran.returncode == 0, ran.stderr
    assert log.read_text() == "" and (bench.root / "logs" / "worker.log.1").read_text() == "a line\n"


def test_a_dashboard_terminate_names_the_dashboard(bench: BenchHandle) -> None:
    from tests.conftest import wait_until
    from tests.test_dashboard import Dashboard, Session, make_token

    make_token(bench)
    dash = Dashboard(bench)
    running = bench.enqueue("testapp.tasks.wait_for_flag", queue="default", key="long", flag="never", limit=120)
    bench.start("worker", "--queue", "default")
    bench.wait_results("long", 1)
    session = Session(dash)
    session.login(make_token(bench))
    form = {"id": running.id, "terminate": "1", "csrf": session.csrf("/jobs"), "next": "/jobs"}
    assert session.request("/jobs/cancel", form)[0] == 303
    rt = bench.rt()
    wait_until(lambda: bench.redis.hexists(rt.keys.failed_data("default"), running.id), 30, what="the job failed")
    shown = bench.run(*S1, "jobs", "show", running.id).stdout
    assert "JobTerminated: stopped while running (dashboard, user alice)" in shown, shown
    assert "bench jobs cancel" not in shown


# --- row 4: /health with Redis down: 503 and one log line per change --------------------------------------
def test_health_says_503_with_redis_down_and_logs_each_change_once(own_bench: BenchHandle, tmp_path: Path) -> None:
    import urllib.error
    import urllib.request

    from benchcelery.store.server import start_server, stop_server
    from tests.test_dashboard import Dashboard, make_token

    def probe(url: str) -> tuple[int, dict[str, object]]:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=10) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    workdir = tmp_path / "redis"
    workdir.mkdir()
    server = start_server(own_bench.port, workdir)
    try:
        make_token(own_bench)
        dash = Dashboard(own_bench)
        assert probe(dash.url) == (200, {"ok": True})
    finally:
        stop_server(server)
    for _ in range(3):
        status, body = probe(dash.url)
        assert status == 503 and body["ok"] is False, body
        assert body["error"] == f"Redis at {own_bench.url} is unreachable: connection refused"
    server = start_server(own_bench.port, workdir)
    try:
        from tests.conftest import wait_until

        wait_until(lambda: probe(dash.url)[0] == 200, 30, what="healthy again")
        probe(dash.url)
    finally:
        stop_server(server)
    log = dash.log()
    assert "Traceback" not in log, log
    assert log.count("health: Redis unreachable") == 1 and log.count("health: Redis reachable again") == 1, log


# --- row 1: workers pick up app code changes in development -----------------------------------------------
def _add(bench: BenchHandle, code: str) -> None:
    tasks = bench.root / "apps" / "testapp" / "tasks.py"
    tasks.write_text(tasks.read_text() + "\n\n" + code + "\n")


def test_a_worker_under_bench_start_runs_code_added_while_it_runs(bench: BenchHandle) -> None:
    # `bench start` gives its processes BENCH_WORKER_RELOAD=1 (the Procfile's worker line is plain `bench worker`)
    from benchcelery.deploy.procfile import process_env
    from tests.conftest import wait_until

    assert process_env(bench.bench)["BENCH_WORKER_RELOAD"] == "1"
    worker = bench.start("worker", "--queue", "default", env=bench.env(BENCH_WORKER_RELOAD="1"))

    def readies(n: int) -> None:
        wait_until(lambda: bench.output(worker).count(" ready.") >= n, 60, what=f"worker start #{n}")

    readies(1)
    bench.rt()  # the test's own view of the app is loaded before the edits
    _add(bench, 'def added_later(key: str) -> None:\n    record(key, "added")')
    readies(2)
    assert "tasks.py changed: restarting with the new code" in bench.output(worker)
    assert bench.run(*S1, "enqueue", "testapp.tasks.added_later", "--kwargs", '{"key": "later"}').returncode == 0
    assert bench.wait_results("later", 1) == ["added"]

    # A bug, then its fix: `bench jobs retry --all` runs the fixed code.
    _add(bench, 'def buggy(key: str) -> None:\n    raise ValueError("the bug")')
    readies(3)
    assert bench.run(*S1, "enqueue", "testapp.tasks.buggy", "--kwargs", '{"key": "fixed"}').returncode == 0
    wait_until(lambda: "the bug" in bench.run(*S1, "jobs", "list", "--state", "failed").stdout, 60, what="the bug")
    _add(bench, 'def buggy(key: str) -> None:  # noqa: F811\n    record(key, "fixed")')
    readies(4)
    assert bench.run(*S1, "jobs", "retry", "--all").returncode == 0
    assert bench.wait_results("fixed", 1) == ["fixed"]
    assert worker.poll() is None  # the same process all along (exec), as `bench start` sees it
    worker.terminate()
    assert worker.wait(60) == 0


def test_a_worker_without_reload_says_to_restart_when_its_code_is_older(bench: BenchHandle) -> None:
    from tests.conftest import wait_until

    worker = bench.start("worker", "--queue", "default", "--no-reload", env=bench.env(BENCH_WORKER_RELOAD="1"))
    assert bench.run(*S1, "enqueue", "testapp.tasks.noop").returncode == 0  # its pool has loaded tasks.py
    wait_until(lambda: "succeeded" in bench.output(worker), 60, what="the first job")
    _add(bench, 'def added_later(key: str) -> None:\n    record(key, "added")')
    assert bench.run(*S1, "enqueue", "testapp.tasks.added_later", "--kwargs", '{"key": "x"}').returncode == 0
    wait_until(lambda: "added_later" in bench.run(*S1, "jobs", "list", "--state", "failed").stdout, 60, what="fail")
    data = json.loads(bench.run(*S1, "jobs", "list", "--state", "failed", "-f", "json").stdout)
    assert data[0]["extra"]["exception"] == (
        "JobRefused: Method testapp.tasks.added_later cannot be imported: testapp.tasks has no attribute "
        "added_later (this worker loaded testapp.tasks before added_later was added: restart the workers, or run "
        "them with reload on change (`bench start`, `bench worker --reload`); then bench jobs retry)"
    ), data[0]
    worker.terminate()
    assert worker.wait(60) == 0


# --- row 8: scheduler numbers that say what they count; queued / running / done outcomes ----------------
def test_scheduler_numbers_and_outcomes_agree_on_the_command_line_and_the_page(bench: BenchHandle) -> None:
    from selenium.webdriver.common.by import By

    from benchcelery.jobs import registry
    from benchcelery.scheduler.events import ScheduledJob
    from benchcelery.scheduler.status import _job_status
    from tests.conftest import wait_until
    from tests.test_dashboard import Dashboard, _browser, make_token

    for _ in range(2):  # ordinary (not scheduled) failures
        bench.enqueue("testapp.tasks.fail", queue="short")
    assert bench.run("worker", "--burst", "--queue", "short").returncode == 0
    status = bench.run(*S1, "scheduler", "status").stdout
    pending = json.loads(bench.run(*S1, "show-pending-jobs", "-f", "json").stdout)
    assert "Failed jobs: 2" in status.splitlines() and pending["total"]["failed"] == 2
    verbose = bench.run(*S1, "scheduler", "status", "-v").stdout
    assert "Failed scheduled runs: 0 (of the failed jobs above)" in verbose.splitlines()
    data = json.loads(bench.run(*S1, "scheduler", "status", "-f", "json").stdout)
    assert (data["failed_jobs"], data["failed_scheduled_jobs"]) == (2, 0)

    make_token(bench)
    dash = Dashboard(bench)
    driver = _browser()
    tick = 'tr[data-method="jobs_demo.tasks.tick"]'
    try:

        def element(by: str, value: str, timeout: float = 15) -> object:
            return wait_until(lambda: driver.find_elements(by, value), timeout, what=value)[0]

        driver.get(dash.url + "/")
        element(By.ID, "token").send_keys(make_token(bench, "alice"))
        element(By.ID, "login").click()
        element(By.ID, "user")
        driver.get(dash.url + "/scheduler?site=site1.local")
        row = element(By.CSS_SELECTOR, tick)
        assert row.find_element(By.CSS_SELECTOR, "td.outcome").text == "-"  # type: ignore[attr-defined]
        row.find_element(By.CSS_SELECTOR, "button").click()  # type: ignore[attr-defined]
        assert element(By.ID, "flash").text == "Run now: jobs_demo.tasks.tick enqueued for site1.local"  # type: ignore[attr-defined]
        row = element(By.CSS_SELECTOR, tick)
        cells = [td.text for td in row.find_elements(By.CSS_SELECTOR, "td")]  # type: ignore[attr-defined]
        assert cells[4] == "queued" and cells[3] != "never", cells  # LAST RUN: the run just queued

        assert bench.run("worker", "--burst", "--queue", "default").returncode == 0
        driver.get(dash.url + "/scheduler?site=site1.local")
        cells = [td.text for td in element(By.CSS_SELECTOR, tick).find_elements(By.CSS_SELECTOR, "td")]  # type: ignore[attr-defined]
        assert cells[4] == "ok", cells

        assert bench.run(*S1, "scheduler", "pause").returncode == 0
        driver.get(dash.url + "/scheduler?site=site1.local")
        cells = [td.text for td in element(By.CSS_SELECTOR, tick).find_elements(By.CSS_SELECTOR, "td")]  # type: ignore[attr-defined]
        assert cells[5] == "paused", cells
        state = element(By.CSS_SELECTOR, 'tr[data-site="site1.local"] td.st-paused').text  # type: ignore[attr-defined]
        assert "paused (pause_scheduler is set; bench scheduler resume resumes it)" in state
        assert "is SET" not in driver.page_source
    finally:
        driver.quit()

    # A run a worker has started is "running" (its status key says started).
    job = ScheduledJob(app="jobs_demo", event="all", method="jobs_demo.tasks.tick", cron=None)
    assert _job_status(job, None, registry.STARTED, 1.0).last_outcome == "running"
    assert _job_status(job, None, registry.QUEUED, 1.0).last_outcome == "queued"
