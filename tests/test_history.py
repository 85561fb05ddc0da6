"""Job history (jobs/history.py, diagnostics/history.py): counters and histograms written by real
workers match the jobs run, every key expires, the rollup, the dashboard's shared stream, and
`bench jobs top`."""

from __future__ import annotations

import http.client
import json
import os
import select
import threading
import time
import urllib.parse
from pathlib import Path

from benchcelery.diagnostics import history as read
from benchcelery.jobs import history
from tests.conftest import BenchHandle, burst, wait_until


def _run_jobs(bench: BenchHandle) -> None:
    for _ in range(5):
        bench.enqueue("testapp.tasks.noop", site="site1.local", queue="short")
    for i in range(3):
        bench.enqueue("testapp.tasks.sleep_then_record", site="site2.local", key=f"s{i}", seconds=0.3)
    bench.enqueue("testapp.tasks.fail", site="site2.local", queue="short")
    burst(bench, "--queue", "short,default")


def test_counters_and_histograms_match_the_jobs_a_worker_ran(bench: BenchHandle) -> None:
    history.configure(None)
    _run_jobs(bench)
    keys = bench.rt().keys
    r = bench.redis
    minutes = read.last_minutes(r, keys, minutes=10)
    total = {name: sum(m.as_dict()[name] for m in minutes) for name in ("enqueued", "started", "done", "failed")}
    assert total == {"enqueued": 9, "started": 9, "done": 8, "failed": 1}
    site2 = read.last_minutes(r, keys, minutes=10, site="site2.local")
    assert sum(m.counts[history.DONE] for m in site2) == 3
    assert sum(m.counts[history.FAILED] for m in site2) == 1
    assert sum(sum(m.wait) for m in minutes) == 9  # every job's wait time counted once

    stats = {(s.queue, s.method): s for s in read.method_stats(r, keys, "hour")}
    noop = stats[("short", "testapp.tasks.noop")]
    assert (noop.count, noop.failed) == (5, 0)
    slow = stats[("default", "testapp.tasks.sleep_then_record")]
    assert slow.count == 3 and slow.max is not None and slow.max >= 0.3
    assert slow.p95 is not None and 0.25 <= slow.p95 <= slow.max  # the 0.25-0.5 s bucket
    failing = stats[("short", "testapp.tasks.fail")]
    assert (failing.count, failing.failed, failing.failure_rate) == (1, 1, 1.0)
    only_site1 = read.method_stats(r, keys, "day", site="site1.local")
    assert [(s.method, s.count) for s in only_site1] == [("testapp.tasks.noop", 5)]

    # Bounded: every history key expires, within the configured retention.
    names = list(r.scan_iter(match=f"{keys.prefix}hist:*"))
    assert names
    for name in names:
        ttl = r.ttl(name)
        limit = history.MARKER_TTL if b":rolled:" in name else 25 * 3600 + 60
        assert 0 < ttl <= limit, (name, ttl)


def test_a_finished_hour_is_rolled_up_once_into_the_daily_keys(bench: BenchHandle) -> None:
    history.configure(None)
    keys = bench.rt().keys
    r = bench.redis
    past = time.time() - 2 * 3600  # a job two hours ago, counted as the worker would
    meta = {"site": "site1.local", "queue": "short", "method": "testapp.tasks.noop"}
    commands = history.finished(keys, {**meta, "started_at": past - 1, "enqueued_at": past - 3}, False, now=past)
    commands += history.simple(keys, history.ENQUEUED, "site1.local", "short", 1, now=past - 3)
    pipe = r.pipeline(transaction=False)
    for command in commands:
        pipe.execute_command(*command)
    pipe.execute()
    hour = int(past) // 3600
    assert hour in history.roll_pending(r, keys)
    assert hour not in history.roll_pending(r, keys)  # once
    counts = dict(read.hourly(r, keys, hours=3))[hour]
    assert (counts["enqueued"], counts["started"], counts["done"]) == (1, 1, 1)
    month = {(s.queue, s.method): s for s in read.method_stats(r, keys, "month")}
    assert month[("short", "testapp.tasks.noop")].count == 1  # from the daily key, counted once
    daily = keys.hist_methods_daily(hour // 24)
    assert 0 < r.ttl(daily) <= 31 * 86400 + 60


def test_history_off_writes_nothing(bench: BenchHandle) -> None:
    history.configure(history.Retention(enabled=False))
    try:
        keys = bench.rt().keys
        assert history.finished(keys, {"site": "s", "queue": "q", "started_at": time.time()}, False) == []
        assert history.simple(keys, history.ENQUEUED, "s", "q") == []
    finally:
        history.configure(None)


def test_metrics_export_the_same_histograms_as_the_dashboard(bench: BenchHandle) -> None:
    from tests.test_monitoring import samples

    history.configure(None)
    _run_jobs(bench)
    m = samples(bench.run("metrics", "--once").stdout)
    keys = bench.rt().keys
    stats = {(s.queue, s.method): s for s in read.method_stats(bench.redis, keys, "hour")}
    for (queue, method), row in stats.items():
        labels = f'method="{method}",queue="{queue}"'
        assert m[f"bench_job_duration_seconds_count{{{labels}}}"] == row.count
        assert m[f"bench_job_wait_seconds_count{{{labels}}}"] == sum(row.wait) == row.count


def _sse_client(url: str, cookie: str, frames: list[str], stop: threading.Event) -> None:
    """Read ``url``'s server-sent events until ``stop``; each event's data goes to ``frames``."""
    parsed = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=10)
    conn.request("GET", f"{parsed.path}?{parsed.query}", headers={"Cookie": cookie, "Accept": "text/event-stream"})
    resp = conn.getresponse()
    assert resp.status == 200 and resp.getheader("Content-Type", "").startswith("text/event-stream")
    while not stop.is_set():
        line = resp.readline().decode()
        if line.startswith("data: "):
            frames.append(line[6:])
        if not line:
            break
    conn.close()


def test_the_stream_reads_redis_at_most_once_a_second_for_every_browser(bench: BenchHandle) -> None:
    from tests.test_dashboard import Dashboard, Session, make_token

    history.configure(None)
    _run_jobs(bench)
    token = make_token(bench)
    dash = Dashboard(bench)
    session = Session(dash)
    session.login(token)
    jar = next(h.cookiejar for h in session.opener.handlers if hasattr(h, "cookiejar"))
    cookie = "; ".join(f"{c.name}={c.value}" for c in jar)
    stop = threading.Event()
    frames: list[list[str]] = [[] for _ in range(6)]
    urls = [f"{dash.url}/stream?"] * 5 + [f"{dash.url}/stream?site=site2.local"]
    threads = [
        threading.Thread(target=_sse_client, args=(u, cookie, f, stop), daemon=True)
        for u, f in zip(urls, frames, strict=True)
    ]
    began = time.monotonic()
    for t in threads:
        t.start()
    try:
        wait_until(lambda: all(len(f) >= 4 for f in frames), 30, what="four frames on every stream")
    except AssertionError:
        raise AssertionError(f"{[len(f) for f in frames]}\n{dash.log()}") from None
    status, body, _ = session.request("/api/stream")
    elapsed = time.monotonic() - began
    stats = json.loads(body)
    stop.set()
    assert status == 200 and stats["streams"] == 6
    assert stats["reads"] <= elapsed + 1, (stats, elapsed)  # one shared read per second, not one per stream
    first = json.loads(frames[0][-1])
    assert (first["done"], first["failed"]) == (8, 1)  # the jobs the test ran, in the last hour
    assert 'data-chart="throughput"' in first["throughput"] and 'data-done="8"' in first["throughput"]
    site2 = json.loads(frames[5][-1])
    assert (site2["done"], site2["failed"]) == (3, 1)


def test_charts_in_a_real_browser_show_the_jobs_run(bench: BenchHandle) -> None:
    """The overview's chart shows the jobs the test ran and follows new ones over its stream
    (no reload); Metrics and the site page show them per method and per site; on a phone's
    width nothing overflows. ``BENCH_SCREENSHOTS=docs`` saves the pictures there."""
    from selenium.webdriver.common.by import By

    from tests.test_dashboard import Dashboard, _browser, make_token

    history.configure(None)
    _run_jobs(bench)
    token = make_token(bench)
    dash = Dashboard(bench)
    shots = os.environ.get("BENCH_SCREENSHOTS")
    driver = _browser()
    try:

        def chart(name: str, attr: str) -> int:
            script = "var c = document.querySelector(arguments[0]); return c && c.getAttribute(arguments[1])"
            value = wait_until(lambda: driver.execute_script(script, f'svg[data-chart="{name}"]', f"data-{attr}"), 15)
            return int(value)

        def shoot(name: str) -> None:
            if shots:
                driver.save_screenshot(str(Path(shots) / name))

        driver.get(dash.url + "/")
        wait_until(lambda: driver.find_elements(By.ID, "token"), 15)[0].send_keys(token)
        driver.find_element(By.ID, "login").click()
        assert (chart("throughput", "done"), chart("throughput", "failed")) == (8, 1)
        assert chart("wait", "minutes") >= 1

        # Live: two more jobs show up through the stream, on the same page.
        driver.execute_script("window.__same_page = true")
        for _ in range(2):
            bench.enqueue("testapp.tasks.noop", site="site1.local", queue="short")
        burst(bench, "--queue", "short")
        wait_until(lambda: chart("throughput", "done") == 10, 20, interval=0.2, what="the chart to follow the stream")
        assert driver.execute_script("return window.__same_page") is True
        shoot("dashboard-charts.png")

        # Metrics: per method, sortable, filterable, with a histogram.
        driver.get(dash.url + "/metrics")
        row = wait_until(lambda: driver.find_elements(By.CSS_SELECTOR, 'tr[data-method="testapp.tasks.noop"]'), 15)[0]
        assert row.get_attribute("data-count") == "7"
        fail_row = driver.find_element(By.CSS_SELECTOR, 'tr[data-method="testapp.tasks.fail"]')
        assert (fail_row.get_attribute("data-count"), fail_row.get_attribute("data-failed")) == ("1", "1")
        assert chart("histogram", "count") == 7  # the first row (most jobs) is shown
        driver.find_element(By.ID, "sort-p95").click()
        first = wait_until(lambda: driver.find_elements(By.CSS_SELECTOR, "#methods tbody tr"), 15)[0]
        assert first.get_attribute("data-method") == "testapp.tasks.sleep_then_record"  # slowest first
        driver.get(dash.url + "/metrics?site=site2.local&window=day")
        methods = {r.get_attribute("data-method") for r in driver.find_elements(By.CSS_SELECTOR, "#methods tbody tr")}
        assert methods == {"testapp.tasks.sleep_then_record", "testapp.tasks.fail"}
        shoot("dashboard-metrics.png")

        # A site's page: its own charts.
        driver.get(dash.url + "/site?site=site2.local")
        assert (chart("throughput", "done"), chart("throughput", "failed")) == (3, 1)
        assert chart("hourly", "done") == 3
        shoot("dashboard-site.png")

        # A phone: the charts fit the screen.
        driver.set_window_size(390, 844)
        driver.get(dash.url + "/")
        chart("throughput", "done")
        widths = driver.execute_script(
            "return [document.documentElement.clientWidth,"
            " Math.max.apply(null, Array.from(document.querySelectorAll('svg.chart')).map(function (s) {"
            " return s.getBoundingClientRect().right; }))]"
        )
        assert widths[1] <= widths[0], widths
        shoot("dashboard-charts-phone.png")
    finally:
        driver.quit()


def test_jobs_top_once_prints_one_frame_at_80_columns(bench: BenchHandle) -> None:
    from click.testing import CliRunner

    from benchcelery.cli import cli

    history.configure(None)
    _run_jobs(bench)
    for _ in range(3):
        bench.enqueue("testapp.tasks.noop", site="site2.local", queue="long")
    result = CliRunner().invoke(cli, ["--bench", str(bench.root), "jobs", "top", "--once"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert max(len(line) for line in lines) <= 80
    row = next(line.split() for line in lines if line.startswith("site2.local") and " long " in line)
    assert row[2:5] == ["3", "0", "0"]  # waiting, running, failed
    failed = next(line.split() for line in lines if line.startswith("site2.local") and " short " in line)
    assert failed[2:5] == ["0", "0", "1"]
    assert "no live worker" in result.output
    assert "(8 in 15 min)" in result.output and "(1)" in result.output  # done / failed per minute

    # A worker and its current job, with how long it has run.
    bench.start("worker", "--queue", "short")
    bench.enqueue("testapp.tasks.wait_for_flag", site="site1.local", queue="short", key="top", flag="go")
    bench.wait_results("top", 1)
    result = CliRunner().invoke(cli, ["--bench", str(bench.root), "jobs", "top", "--once"])
    worker = next(line for line in result.output.splitlines() if "wait_for_flag" in line)
    assert " short " in worker and worker.split()[-1].endswith("s") and len(worker) <= 80
    bench.redis.set("test:go", 1)


def test_jobs_top_refreshes_in_a_terminal_and_q_quits(bench: BenchHandle) -> None:
    import fcntl
    import pty
    import struct
    import subprocess
    import termios

    from tests.conftest import BENCH_BIN

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 80, 0, 0))
    proc = subprocess.Popen(
        [BENCH_BIN, "jobs", "top"],
        cwd=bench.root,
        env={**bench.env(), "TERM": "xterm"},
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
    )
    os.close(slave)
    seen = bytearray()

    def read_until(text: bytes) -> bool:
        while select.select([master], [], [], 0.2)[0]:
            try:
                seen.extend(os.read(master, 65536))
            except OSError:
                break
        return text in seen

    try:
        wait_until(lambda: read_until(b"WAITING"), 30, what="the first frame")
        seen.clear()
        bench.enqueue("testapp.tasks.noop", site="site1.local", queue="long")
        wait_until(lambda: read_until(b"site1.local"), 15, what="a later frame with the new job")
        os.write(master, b"q")
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
