"""Re-take the dashboard screenshots in docs/: ``.venv/bin/python docs/screenshots.py``.

Builds a throw-away bench with the example app and four sites on a private Redis, gives it some
failed, waiting and running jobs, a scheduler and a worker, starts `bench dashboard` and photographs
its pages with headless Chromium (Debian's chromium + chromium-driver, see tests/browser.py).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchcelery.store.server import free_port, start_server, stop_server  # noqa: E402
from benchcelery.deploy.scaffold import create_bench  # noqa: E402
from tests.browser import chrome  # noqa: E402

BENCH = str(Path(sys.executable).parent / "bench")
SITES = ("erp.example.com", "shop.example.com", "hr.example.com", "blog.example.com")
DOCS = ROOT / "docs"


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-shots-"))
    port = free_port()
    redis_proc = start_server(port, work)
    procs: list[subprocess.Popen[bytes]] = []
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BENCH_", "FRAPPE_"))}
    try:
        bench = create_bench(work / "demo-bench", redis_url=f"redis://127.0.0.1:{port}", example_app=True)
        for site in SITES:
            bench.new_site(site, {})

        def run(*args: str) -> str:
            return subprocess.run(
                [BENCH, *args], cwd=bench.root, env=env, check=True, capture_output=True, text=True
            ).stdout

        def start(*args: str) -> None:
            procs.append(
                subprocess.Popen(
                    [BENCH, *args],
                    cwd=bench.root,
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # killed as a group (a worker's pool processes too)
                )
            )

        failures = {
            "erp.example.com": ["Could not connect to the SMTP server", "Deadlock found when trying to get lock"],
            "shop.example.com": ["Payment gateway timed out after 30 s"],
        }
        for site, messages in failures.items():
            for message in messages:
                run(
                    "--site",
                    site,
                    "enqueue",
                    "jobs_demo.tasks.fail",
                    "--queue",
                    "default",
                    "--kwargs",
                    f'{{"message": "{message}"}}',
                )
        run("worker", "--burst", "--queue", "default")
        import benchcelery

        for site, counts in zip(SITES, ((12, 340, 3), (4, 57, 0), (0, 8, 1), (0, 0, 0)), strict=True):
            benchcelery.init(site=site, bench_path=str(bench.root))
            items = [
                {"method": "jobs_demo.tasks.say", "queue": queue, "message": "hi", "label": str(i)}
                for queue, n in zip(("short", "default", "long"), counts, strict=True)
                for i in range(n)
            ]
            if items:
                benchcelery.enqueue_many(items)
        run("--site", "hr.example.com", "scheduler", "pause")
        token = run("dashboard", "token", "--user", "admin").strip()
        run(
            "--site",
            "erp.example.com",
            "enqueue",
            "jobs_demo.tasks.slow",
            "--queue",
            "short",
            "--kwargs",
            '{"seconds": 120}',
            "--at-front",
        )
        start("worker", "--queue", "short")
        start("schedule")
        dport = free_port()
        start("dashboard", "--port", str(dport))
        url = f"http://127.0.0.1:{dport}"
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{url}/health", timeout=1).read()
                break
            except OSError:
                time.sleep(0.1)
        time.sleep(8)  # the worker takes the slow job, the scheduler ticks once, jobs age a little

        driver = chrome(1280, 1080)
        try:
            driver.get(url + "/")
            driver.find_element("id", "token").send_keys(token)
            driver.find_element("id", "login").click()
            time.sleep(0.5)
            driver.save_screenshot(str(DOCS / "dashboard-overview.png"))
            driver.get(url + "/failed")
            driver.set_window_size(1280, 600)
            driver.save_screenshot(str(DOCS / "dashboard-failed.png"))
            driver.set_window_size(390, 844)
            driver.get(url + "/")
            time.sleep(0.5)
            driver.save_screenshot(str(DOCS / "dashboard-phone.png"))
        finally:
            driver.quit()
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:  # the worker still runs the slow job: no need to wait for it
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        stop_server(redis_proc)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
