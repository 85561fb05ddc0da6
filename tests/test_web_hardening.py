"""The web surfaces' trust boundaries (issue: hardening round 2): Flower's API and Host check, the
metrics exporter's exposure, dashboard sessions, redirects, headers, bad query values, the action
log, user names, and bounded metrics / stray failed queues."""

from __future__ import annotations

import json
import stat
import time
import urllib.error
import urllib.request
from base64 import b64encode
from typing import Any

from benchcelery.store.server import free_port
from tests.conftest import BenchHandle, wait_until
from tests.forge import valid_message
from tests.test_dashboard import Dashboard, Session, _NoRedirect, make_token


def http(url: str, method: str = "GET", headers: dict[str, str] | None = None, body: bytes | None = None) -> Any:
    """(status, headers, body) without following redirects."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.build_opener(_NoRedirect()).open(request, timeout=10) as resp:
            return resp.status, resp.headers, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read().decode(errors="replace")
    except OSError:
        return 0, {}, ""


def basic(login: str) -> dict[str, str]:
    return {"Authorization": "Basic " + b64encode(login.encode()).decode()}


# --- Flower (row 2) ---
def test_flower_never_runs_its_api_unauthenticated_and_checks_the_host(bench: BenchHandle) -> None:
    port = free_port()
    proc = bench.start("flower", "--port", str(port))
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: http(f"{base}/healthcheck")[0] in (200, 401), timeout=30, what="Flower up")
    path = bench.root / "config" / "flower_basic_auth"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    login = path.read_text().strip()
    assert login.startswith("flower:") and login in bench.output(proc)  # printed once, when made
    assert http(f"{base}/api/workers")[0] == 401
    assert http(f"{base}/api/worker/shutdown/x", "POST", body=b"")[0] == 401
    assert http(f"{base}/api/workers", headers=basic(login))[0] == 200
    hostile = {**basic(login), "Origin": "http://evil.example", "Content-Type": "text/plain"}
    assert http(f"{base}/api/task/revoke/site1.local::x", "POST", hostile, b"")[0] == 403
    rebound = {**basic(login), "Host": f"evil.example:{port}"}
    assert http(f"{base}/api/workers", headers=rebound)[0] == 421
    assert http(f"http://localhost:{port}/api/workers", headers=basic(login))[0] == 200
    proc.terminate()
    proc.wait(10)
    again = bench.start("flower", "--port", str(free_port()))
    wait_until(lambda: again.poll() is None, 5, what="second Flower")
    assert path.read_text().strip() == login


# --- metrics (row 14) ---
def test_metrics_off_loopback_needs_a_login_or_a_stated_public(bench: BenchHandle) -> None:
    port = free_port()
    refused = bench.run("metrics", "--address", "0.0.0.0", "--port", str(port), timeout=30)
    assert refused.returncode == 1 and refused.stderr.strip().startswith("Refusing to serve metrics on 0.0.0.0")
    assert "Traceback" not in refused.stderr
    bench.set_config(metrics_basic_auth="prom:pw1")
    proc = bench.start("metrics", "--address", "0.0.0.0", "--port", str(port))
    url = f"http://127.0.0.1:{port}/metrics"
    wait_until(
        lambda: http(url)[0] == 401, 30, what=f"metrics behind basic auth {bench.output(proc) if proc.poll() else ''}"
    )
    status, _h, body = http(url, headers=basic("prom:pw1"))
    assert status == 200 and "bench_up 1" in body
    assert http(url, headers=basic("prom:wrong"))[0] == 401


# --- dashboard sessions (rows 3, 4, 8, 14) ---
def test_logout_and_rotating_the_secret_end_sessions_server_side(bench: BenchHandle) -> None:
    make_token(bench)
    dash = Dashboard(bench)
    session = Session(dash)
    session.login(make_token(bench, "alice"))
    saved = next(c for c in session.opener.handlers if hasattr(c, "cookiejar")).cookiejar
    cookie = next(iter(saved)).value
    assert http(f"{dash.url}/", headers={"Cookie": f"bench_dashboard={cookie}"})[0] == 200
    assert session.request("/logout", {"csrf": session.csrf()})[0] == 303
    assert http(f"{dash.url}/", headers={"Cookie": f"bench_dashboard={cookie}"})[0] == 303  # replay: dead

    other = Session(dash)
    token = make_token(bench, "bob")
    other.login(token)
    assert other.request("/")[0] == 200
    bench.bench.update_config({"dashboard_secret": "rotated-while-running"})  # same process, no restart
    assert other.request("/")[0] == 303
    assert Session(dash).request("/login", {"token": token, "next": "/"})[0] == 401
    fresh = Session(dash)
    fresh.login(make_token(bench, "carol"))
    config = json.loads(bench.bench.common_config_file.read_text())
    del config["dashboard_secret"]
    bench.bench.common_config_file.write_text(json.dumps(config))
    assert fresh.request("/")[0] == 303


def test_next_only_same_origin_headers_and_bad_queries(bench: BenchHandle) -> None:
    make_token(bench)
    dash = Dashboard(bench)
    token = make_token(bench, "alice")
    for target in ("///evil.com", "//evil.com", "/\\evil.com", "https://evil.com", "/\tevil.com"):
        status, _b, location = Session(dash).request("/login", {"token": token, "next": target})
        assert status == 303 and location == "/", (target, location)
    session = Session(dash)
    assert session.request("/login", {"token": token, "next": "/failed?site=x"})[2] == "/failed?site=x"
    status, headers, _ = http(f"{dash.url}/login")
    assert status == 200
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert headers["X-Frame-Options"] == "DENY" and headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "same-origin"
    for path in ("/failed?page=abc", "/failed?page=0", "/jobs?page=-1", "/jobs?page=1e9", "/jobs?state=x"):
        assert session.request(path)[0] == 400, path


def test_secure_cookie_only_behind_a_trusted_tls_proxy(bench: BenchHandle) -> None:
    make_token(bench)
    bench.set_config(dashboard_trusted_proxies=["127.0.0.1"])
    dash = Dashboard(bench)
    form = f"token={make_token(bench, 'alice')}&next=/".encode()
    plain = http(f"{dash.url}/login", "POST", {"Content-Type": "application/x-www-form-urlencoded"}, form)[1]
    assert "Secure" not in plain["Set-Cookie"] and "HttpOnly" in plain["Set-Cookie"]
    tls = {"Content-Type": "application/x-www-form-urlencoded", "X-Forwarded-Proto": "https"}
    assert "Secure" in http(f"{dash.url}/login", "POST", tls, form)[1]["Set-Cookie"]


def test_action_log_fields_are_escaped_and_user_names_checked(bench: BenchHandle) -> None:
    bad = bench.run("dashboard", "token", "--user", "a\nb")
    assert bad.returncode == 1 and "control characters" in bad.stderr and "Traceback" not in bad.stderr
    make_token(bench)
    dash = Dashboard(bench)
    session = Session(dash)
    session.login(make_token(bench, "alice"))
    forged = "x\n2026-01-01 00:00:00,000 INFO benchcelery.dashboard.actions: user=root action=delete-all"
    session.request("/failed/delete", {"id": forged, "csrf": session.csrf(), "next": "/failed"})
    wait_until(lambda: "action=delete target=x\\x0a2026" in dash.log(), 10, what="escaped log line")
    assert not any(line.startswith("2026-01-01") for line in dash.log().splitlines())


# --- bounded pages (row 7) ---
def test_failed_pages_read_only_their_records_and_deep_job_pages_are_direct(bench: BenchHandle) -> None:
    from benchcelery.dashboard import data
    from benchcelery.jobs import registry

    rt = bench.rt()
    big = "A" * (2 * 1024 * 1024)
    for i in range(120):
        rec = {"job_id": f"site1.local::j{i}", "site": "site1.local", "queue": "default", "method": "m.x"}
        rec.update(exception=f"E{i}", traceback=big if i < 3 else "", kwargs={})
        registry.record_failure(rt.redis, rt.keys, "default", rec, limit=1000, ttl=3600)
    calls: list[int] = []
    real = data._records

    def counting(rt_: Any, rows: list[Any]) -> Any:
        calls.append(len(rows))
        return real(rt_, rows)

    data._records = counting  # type: ignore[assignment]
    try:
        page = data.failed_page(rt, data.FailedFilter(), 2)
    finally:
        data._records = real  # type: ignore[assignment]
    assert page.total == 120 and len(page.jobs) == data.PAGE_SIZE and calls == [data.PAGE_SIZE]
    assert all("traceback" not in j.extra for j in page.jobs)

    key = rt.keys.site_list("default", "site1.local", 3)  # the site's own list, where enqueue pushes
    template = valid_message(rt, "testapp.tasks.noop")
    msgs = []
    for i in range(300):
        template["headers"]["id"] = f"site1.local::q{i}"
        msgs.append(json.dumps(template))
    rt.redis.lpush(key, *msgs)
    rt.redis.hset(rt.keys.pending_counts("default"), "site1.local", 300)
    rt.redis.zadd(rt.keys.sites("default"), {"site1.local": 0})
    last = data.job_page(rt, "site1.local", "default", "queued", 99_999_999)
    assert last.page == 6 and [j.id for j in last.jobs][:1] == ["site1.local::q250"]


# --- bounded metrics, stray queues (row 6) ---
def test_refused_methods_share_a_label_and_stray_failures_are_visible(bench: BenchHandle) -> None:
    from benchcelery.jobs import durations, registry

    rt = bench.rt()
    pipe = rt.redis.pipeline()
    for i in range(30):
        durations.observe(pipe, rt.keys, {"method": f"m{i:04d}.x", "queue": "default", "started_at": time.time()})
    durations.observe(pipe, rt.keys, {"method": "testapp.tasks.noop", "queue": "default", "started_at": time.time()})
    pipe.execute()
    assert 0 < rt.redis.ttl(rt.keys.durations("default")) <= durations.DEFAULT_TTL
    rec = {"job_id": "site1.local::forged", "site": "site1.local", "queue": "bogusq", "method": "x.y"}
    registry.record_failure(rt.redis, rt.keys, "bogusq", {**rec, "exception": "E"}, limit=10, ttl=3600)

    scrape = bench.run("metrics", "--once").stdout
    methods = {
        line.split('method="')[1].split('"')[0]
        for line in scrape.splitlines()
        if "duration" in line and 'method="' in line
    }
    assert methods == {"[refused]", "testapp.tasks.noop"}
    assert 'bench_queue_configured{queue="bogusq"} 0.0' in scrape
    assert 'bench_jobs_failed{queue="bogusq",site="site1.local"} 1.0' in scrape

    listed = bench.run("--site", "site1.local", "jobs", "list", "--state", "failed")
    assert "bogusq [not configured]" in listed.stdout, listed.stdout + listed.stderr
    doctor = bench.run("--site", "site1.local", "doctor")
    assert "queue bogusq, which no config names" in doctor.stdout
    make_token(bench)
    dash = Dashboard(bench)
    session = Session(dash)
    session.login(make_token(bench, "alice"))
    status, body, _ = session.request("/failed")
    assert status == 200 and 'id="stray-queues"' in body and "site1.local::forged" in body
