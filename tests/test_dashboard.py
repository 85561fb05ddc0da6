"""`bench dashboard`: a real server process, real HTTP, real Redis, real workers; and a real browser.

The browser test drives Debian's chromium through chromium-driver (tests/browser.py). Without them
it is skipped locally with the reason, and fails under CI (CI=true), where .ci/run installs them.
"""

from __future__ import annotations

import http.cookiejar
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import pytest

from benchcelery.store.server import free_port
from tests.conftest import BenchHandle, wait_until

SITE1, SITE2 = "site1.local", "site2.local"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class Dashboard:
    """A `bench dashboard` process on a free port."""

    def __init__(self, bench: BenchHandle, *args: str) -> None:
        self.bench = bench
        self.port = free_port()
        self.proc = bench.start("dashboard", "--port", str(self.port), *args)
        self.url = f"http://127.0.0.1:{self.port}"

        def up() -> bool:
            assert self.proc.poll() is None, self.log()
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as resp:
                    return resp.status == 200
            except OSError:
                return False

        wait_until(up, 30, interval=0.1, what=f"bench dashboard to answer\n{self.log()}")

    def log(self) -> str:
        return self.bench.output(self.proc)


class Session:
    """An HTTP client with cookies that does not follow redirects (so tests see them)."""

    def __init__(self, dash: Dashboard) -> None:
        self.dash = dash
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()), _NoRedirect()
        )

    def request(self, path: str, form: dict[str, str] | None = None) -> tuple[int, str, str]:
        """(status, body, Location header)."""
        body = urllib.parse.urlencode(form).encode() if form is not None else None
        try:
            with self.opener.open(f"{self.dash.url}{path}", data=body, timeout=30) as resp:
                return resp.status, resp.read().decode(), resp.headers.get("Location", "")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace"), exc.headers.get("Location", "")

    def login(self, token: str) -> None:
        status, _body, location = self.request("/login", {"token": token, "next": "/"})
        assert status == 303 and location.endswith("/"), (status, location)

    def csrf(self, path: str = "/failed") -> str:
        status, body, _ = self.request(path)
        assert status == 200, body
        found = re.search(r'name="csrf" value="([^"]+)"', body)
        assert found, body
        return found.group(1)

    def overview(self) -> dict[str, Any]:
        status, body, _ = self.request("/api/overview")
        assert status == 200, body
        return json.loads(body)


def make_token(bench: BenchHandle, user: str = "alice", *extra: str) -> str:
    result = bench.run("dashboard", "token", "--user", user, *extra)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def pending_json(bench: BenchHandle, site: str) -> dict[str, int]:
    result = bench.run("--site", site, "show-pending-jobs", "-f", "json")
    assert result.returncode == 0, result.stderr
    return {q["name"]: q["pending"] for q in json.loads(result.stdout)["queues"]}


def fail_jobs(bench: BenchHandle, site: str, n: int, message: str = "boom") -> None:
    for _ in range(n):
        bench.enqueue("testapp.tasks.fail", site=site, queue="default", message=message)
    result = bench.run("worker", "--burst", "--queue", "default", timeout=120)
    assert result.returncode == 0, result.stderr


@pytest.fixture
def dash(bench: BenchHandle) -> Dashboard:
    make_token(bench)  # the bench's login secret exists before the server starts
    return Dashboard(bench)


# --- login, safety ---
def test_login_is_required_and_tokens_are_checked(bench: BenchHandle, dash: Dashboard) -> None:
    anon = Session(dash)
    status, _, location = anon.request("/")
    assert status == 303 and "/login" in location
    assert anon.request("/api/overview")[0] == 303
    assert anon.request("/failed/retry", {"id": "x"})[0] == 401
    status, body, _ = anon.request("/login", {"token": "forged.token.value", "next": "/"})
    assert status == 401 and "Login refused" in body

    old_token = make_token(bench, "alice")
    session = Session(dash)
    session.login(old_token)
    status, body, _ = session.request("/")
    assert status == 200 and "alice" in body

    # A new dashboard_secret revokes every token made before.
    bench.bench.update_config({"dashboard_secret": "rotated-secret"})
    rotated = Dashboard(bench)
    assert Session(rotated).request("/login", {"token": old_token, "next": "/"})[0] == 401
    Session(rotated).login(make_token(bench, "bob"))


def test_refuses_a_public_address_without_a_login(bench: BenchHandle) -> None:
    result = bench.run("dashboard", "--host", "0.0.0.0", "--port", str(free_port()), timeout=30)
    assert result.returncode == 1
    assert "Refusing to listen on 0.0.0.0 without a login configured" in result.stderr
    assert "Traceback" not in result.stderr
    assert "dashboard_secret" not in bench.bench.common_config()  # nothing written
    first = Dashboard(bench)  # on loopback it starts (and creates the secret tokens are signed with)
    assert "dashboard_secret" in bench.bench.common_config()
    taken = bench.run("dashboard", "--port", str(first.port), timeout=30)
    assert taken.returncode == 1 and taken.stderr.strip().startswith(f"Cannot listen on 127.0.0.1:{first.port}")


def test_actions_need_csrf_are_refused_read_only_and_are_logged(bench: BenchHandle, dash: Dashboard) -> None:
    fail_jobs(bench, SITE1, 1)
    job_id = bench.redis.zrange(f"{bench.prefix}failed:default", 0, -1)[0].decode()
    session = Session(dash)
    session.login(make_token(bench, "alice"))
    assert session.request("/failed/delete", {"id": job_id})[0] == 403  # no CSRF token
    assert session.request("/failed/delete", {"id": job_id, "csrf": "wrong"})[0] == 403
    viewer = Session(dash)
    viewer.login(make_token(bench, "viewer", "--read-only"))
    status, body, _ = viewer.request("/failed")
    assert status == 200 and "read-only" in body and "Retry" not in body
    assert viewer.request("/failed/delete", {"id": job_id, "csrf": viewer.csrf()})[0] == 403
    assert session.overview()["queues"]["default"][SITE1]["failed"] == 1  # nothing happened so far

    status, _, location = session.request("/failed/delete", {"id": job_id, "csrf": session.csrf(), "next": "/failed"})
    assert status == 303 and location == "/failed"
    assert f"Deleted failed job {job_id}" in session.request("/failed")[1]  # the flash message
    assert session.overview()["queues"]["default"][SITE1]["failed"] == 0
    wait_until(lambda: f"user=alice action=delete target={job_id}" in dash.log(), 10, what="the action log line")


def test_read_only_server(bench: BenchHandle) -> None:
    make_token(bench)
    dash = Dashboard(bench, "--read-only")
    session = Session(dash)
    session.login(make_token(bench, "alice"))
    assert session.request("/scheduler/action", {"site": SITE1, "action": "pause", "csrf": session.csrf()})[0] == 403
    assert bench.run("--site", SITE1, "scheduler", "status").stdout.startswith("Scheduler: enabled")


# --- reads ---
def test_overview_counts_are_the_clis(bench: BenchHandle, dash: Dashboard) -> None:
    for _ in range(3):
        bench.enqueue("testapp.tasks.noop", site=SITE1, queue="long")
    for _ in range(5):
        bench.enqueue("testapp.tasks.noop", site=SITE2, queue="long")
    bench.enqueue("testapp.tasks.noop", site=SITE2, queue="short")
    session = Session(dash)
    session.login(make_token(bench))
    data = session.overview()
    for site in (SITE1, SITE2):
        cli = pending_json(bench, site)
        assert {q: data["queues"][q][site]["pending"] for q in cli} == cli
    assert data["queues"]["long"]["*"]["pending"] == 8
    oldest = data["queues"]["long"][SITE1]
    assert 0 <= oldest["oldest_age"] < 60
    assert oldest["health"] == "bad"  # no worker serves the queue
    assert data["queues"]["default"][SITE1]["health"] == "idle"
    status, body, _ = session.request("/partial/overview")
    assert status == 200 and 'data-site="site2.local" data-queue="long" data-pending="5"' in body


def test_reads_never_import_celery(bench: BenchHandle) -> None:
    bench.enqueue("testapp.tasks.noop", site=SITE1, queue="long")
    code = f"""
import sys
from pathlib import Path
from benchcelery.bench.layout import Bench
from benchcelery.bench.config import Settings
from benchcelery.dashboard import data
from benchcelery.dashboard.app import create_app
from benchcelery.runtime import Runtime
from benchcelery.scheduler.status import scheduler_status

rt = Runtime(Settings.from_bench(Bench(Path({str(bench.root)!r}))))
create_app(rt)
assert data.overview(rt).cell({SITE1!r}, "long").pending == 1
data.failed_jobs(rt, data.FailedFilter(text="x"))
data.job_page(rt, {SITE1!r}, "long", "queued", 1)
data.job_page(rt, {SITE1!r}, "long", "started", 1)
scheduler_status(rt, {SITE1!r}, jobs=True)
print(sorted(m for m in sys.modules if m.split(".")[0] in ("celery", "kombu", "redbeat")))
"""
    make_token(bench)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_oldest_age_reads_only_the_end_of_the_queue(bench: BenchHandle) -> None:
    from benchcelery.diagnostics.oldest import oldest_ages
    from benchcelery.jobs import inspect

    rt = bench.rt()
    bench.enqueue("testapp.tasks.noop", site=SITE1, queue="long")
    first = time.time()
    for _ in range(5):
        bench.enqueue("testapp.tasks.noop", site=SITE2, queue="long")
    pending = inspect.count_pending(rt.redis, rt.keys, ["long"])
    now = first + 100
    ages = oldest_ages(rt.redis, rt.keys, ["long"], pending, window=3, now=now)["long"]
    assert 100 <= ages[""].seconds < 101  # site1's job is the oldest of the queue
    assert ages[SITE1].seconds == ages[""].seconds
    # A window of 3 does not reach site2's newest jobs, but does hold its oldest ones.
    assert ages[SITE2].seconds <= ages[""].seconds
    ages = oldest_ages(rt.redis, rt.keys, ["long"], {"long": {**pending["long"], "site3.local": 1}}, window=3, now=now)
    assert "site3.local" not in ages["long"]  # none of its jobs in the window: no age rather than a wrong one


def test_failed_filters_and_bulk_actions_ask_first(bench: BenchHandle, dash: Dashboard) -> None:
    fail_jobs(bench, SITE1, 2, message="<b>disk</b> full")
    fail_jobs(bench, SITE2, 3, message="timeout talking to smtp")
    session = Session(dash)
    session.login(make_token(bench))
    body = session.request("/failed")[1]
    assert body.count("data-id=") == 5
    assert "ValueError: &lt;b&gt;disk&lt;/b&gt; full" in body and "<b>disk" not in body  # job text is escaped
    body = session.request("/failed?" + urllib.parse.urlencode({"text": "SMTP"}))[1]
    assert body.count("data-id=") == 3 and SITE1 not in re.sub(r"<select.*?</select>", "", body, flags=re.S)
    assert session.request(f"/failed?site={SITE1}&method=tasks.fail")[1].count("data-id=") == 2

    csrf = session.csrf()
    form = {"csrf": csrf, "action": "delete", "text": "smtp", "next": "/failed"}
    status, body, _ = session.request("/failed/bulk", form)
    assert status == 200 and "Delete 3 failed jobs?" in body  # a confirmation page, nothing deleted
    assert session.overview()["queues"]["default"]["*"]["failed"] == 5
    status, _, _ = session.request("/failed/bulk", {**form, "confirm": "yes"})
    assert status == 303
    assert "Deleted 3 failed jobs" in session.request("/failed")[1]
    assert json.loads(bench.run("--site", SITE2, "show-pending-jobs", "-f", "json").stdout)["total"]["failed"] == 0
    assert json.loads(bench.run("--site", SITE1, "show-pending-jobs", "-f", "json").stdout)["total"]["failed"] == 2


def test_queued_jobs_are_paged_and_cancelled(bench: BenchHandle, dash: Dashboard) -> None:
    import benchcelery

    bench.rt(SITE1)
    benchcelery.enqueue_many([{"method": "testapp.tasks.noop", "queue": "short"} for _ in range(120)])
    bench.enqueue("testapp.tasks.noop", site=SITE2, queue="short")
    session = Session(dash)
    session.login(make_token(bench))
    status, body, _ = session.request(f"/jobs?site={SITE1}&queue=short&page=3")
    assert status == 200 and "120 queued" in body and "page 3 of 3" in body
    assert body.count("data-id=") == 20
    ids = re.findall(r'<tr data-id="([^"]+)"><td>(\d+)</td>', body)
    assert [int(p) for _, p in ids] == list(range(100, 120))  # positions: the order workers take them
    status, _, _ = session.request("/jobs/cancel", {"id": ids[0][0], "csrf": session.csrf("/jobs"), "next": "/jobs"})
    assert status == 303
    assert f"Job {ids[0][0]} removed" in session.request("/jobs")[1]
    assert pending_json(bench, SITE1)["short"] == 119
    assert pending_json(bench, SITE2)["short"] == 1


def test_terminate_a_running_job_and_trigger_a_scheduled_one(bench: BenchHandle, dash: Dashboard) -> None:
    running = bench.enqueue("testapp.tasks.wait_for_flag", queue="default", key="long", flag="never", limit=120)
    bench.start("worker", "--queue", "default")
    bench.wait_results("long", 1)
    session = Session(dash)
    session.login(make_token(bench))
    body = session.request(f"/jobs?site={SITE1}&queue=default&state=started")[1]
    assert f'data-id="{running.id}"' in body and "1 running" in body
    # the overview's worker row says what the worker runs now (the job's lease names its worker)
    (name,) = [n.decode() for n in bench.redis.zrange(bench.rt().keys.workers, 0, -1)]
    row = session.request("/")[1].split(f"<td>{name}</td>", 1)[1].split("</tr>", 1)[0]
    assert "testapp.tasks.wait_for_flag" in row
    form = {"id": running.id, "terminate": "1", "csrf": session.csrf("/jobs"), "next": "/jobs"}
    assert session.request("/jobs/cancel", form)[0] == 303
    assert f"Job {running.id} terminated" in session.request("/jobs")[1]
    rt = bench.rt()
    wait_until(lambda: bench.redis.hexists(rt.keys.failed_data("default"), running.id), 30, what="the job failed")
    assert "JobTerminated" in session.request(f"/job?id={running.id}")[1]

    # "Run now" of the example app's `all` job: queued through the scheduler's own trigger.
    form = {"site": SITE2, "method": "jobs_demo.tasks.tick", "csrf": session.csrf("/scheduler"), "next": "/scheduler"}
    assert session.request("/scheduler/trigger", form)[0] == 303
    assert "Run now: jobs_demo.tasks.tick enqueued for site2.local" in session.request("/scheduler")[1]
    log = bench.root / "logs" / "jobs_demo.log"  # the worker (it serves default) ran it
    wait_until(lambda: log.is_file() and "[site2.local] tick" in log.read_text(), 30, what="the triggered job to run")


def test_deploy_files_run_the_dashboard(bench: BenchHandle) -> None:
    assert "dashboard" not in bench.run("setup", "procfile", "--dry-run").stdout
    bench.set_config(dashboard=1)
    assert "dashboard: bench dashboard" in bench.run("setup", "procfile", "--dry-run").stdout
    supervisor = bench.run("setup", "supervisor", "--dry-run", "--skip-redis").stdout
    assert re.search(r"\[program:[^\]]+-dashboard\]\n", supervisor)
    assert re.search(r"command=\S*bench dashboard\n", supervisor)
    assert re.search(r"programs=[^\n]*-dashboard", supervisor)
    systemd = bench.run("setup", "systemd", "--dry-run", "--skip-redis").stdout
    assert "-dashboard.service" in systemd and "ExecStart=" in systemd


# --- the browser ---
def _browser() -> Any:
    from tests.browser import chrome, find_chromium

    if find_chromium() is None:
        reason = "chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI must run the browser test: {reason}")
        pytest.skip(reason)
    return chrome(1280, 900)


def test_in_a_real_browser(bench: BenchHandle, dash: Dashboard) -> None:
    from selenium.webdriver.common.by import By

    # Waiting jobs of two sites on a queue no worker serves; a job that fails until a flag is set.
    for _ in range(2):
        bench.enqueue("testapp.tasks.noop", site=SITE1, queue="long")
    for _ in range(4):
        bench.enqueue("testapp.tasks.noop", site=SITE2, queue="long")
    bench.enqueue("testapp.tasks.fail_unless_flag", site=SITE1, queue="default", key="retried", flag="go", n=7)
    bench.start("worker", "--queue", "short,default")
    wait_until(lambda: bench.redis.zcard(f"{bench.prefix}failed:default") == 1, 60, what="the job to fail")

    driver = _browser()
    try:

        def element(by: str, value: str, timeout: float = 15) -> Any:
            return wait_until(
                lambda: driver.find_elements(by, value), timeout, what=f"{value} on {driver.current_url}"
            )[0]

        # Log in.
        driver.get(dash.url + "/")
        element(By.ID, "token").send_keys(make_token(bench, "alice"))
        element(By.ID, "login").click()
        assert element(By.ID, "user").text == "alice"

        # Two sites' pending counts are show-pending-jobs'.
        def cell(site: str, queue: str) -> int:
            # One script call: the live refresh may replace the table between a find and a read.
            script = "var c = document.querySelector(arguments[0]); return c && c.getAttribute('data-pending')"
            selector = f'td[data-site="{site}"][data-queue="{queue}"]'
            return int(wait_until(lambda: driver.execute_script(script, selector), 15, what=selector))

        for site in (SITE1, SITE2):
            cli = pending_json(bench, site)
            assert {q: cell(site, q) for q in cli} == cli
        assert cell(SITE2, "long") == 4

        # Live numbers: a new job shows up without a reload (the page's own JS state survives).
        driver.execute_script("window.__same_page = true")
        bench.enqueue("testapp.tasks.noop", site=SITE2, queue="long")
        wait_until(lambda: cell(SITE2, "long") == 5, 20, interval=0.2, what="the overview to refresh by itself")
        assert driver.execute_script("return window.__same_page") is True

        # The failed job: its traceback, then retry it and see it run.
        driver.get(dash.url + "/failed")
        element(By.CSS_SELECTOR, "a.job-link").click()
        assert "ValueError: not yet" in element(By.ID, "exception").text
        assert "fail_unless_flag" in element(By.ID, "traceback").text
        assert '"n": 7' in element(By.ID, "kwargs").text
        bench.redis.set("test:go", 1)
        element(By.ID, "retry").click()
        assert element(By.ID, "flash").text.startswith("Retried site1.local::")
        assert driver.current_url == dash.url + "/failed"  # back to the list: the job left the registry
        assert bench.wait_results("retried", 1, timeout=60) == [7]
        driver.get(dash.url + "/failed")
        assert "No failed jobs" in element(By.ID, "failed").text

        # Pause a site's scheduler; the CLI agrees.
        driver.get(dash.url + "/scheduler")
        element(By.CSS_SELECTOR, f'tr[data-site="{SITE2}"] button.sched-pause').click()
        assert element(By.ID, "flash").text == f"Scheduler is paused for site {SITE2}"
        assert element(By.CSS_SELECTOR, f'tr[data-site="{SITE2}"]').get_attribute("data-state") == "paused"
        status = json.loads(bench.run("--site", SITE2, "scheduler", "status", "-f", "json").stdout)
        assert status["status"] == "paused"
        assert bench.run("--site", SITE1, "scheduler", "status").stdout.startswith("Scheduler: enabled")
    finally:
        driver.quit()
    assert "user=alice action=retry" in dash.log() and f"user=alice action=scheduler-pause target={SITE2}" in dash.log()
