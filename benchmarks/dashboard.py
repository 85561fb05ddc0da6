"""``python -m benchmarks.dashboard [--reps N]``: `bench dashboard` page times under a big backlog.

A private Redis and the benchmarks' 20-site bench (benchmarks/env.py); 100,000 waiting jobs spread
evenly over the 20 sites and the three queues (enqueue_many), the failed registry full (1,000
records per queue, its default cap), one `bench dashboard` process. Each page is fetched over HTTP
(logged in) ``--reps`` times after 3 warm-up requests; the time is the whole request as a browser
sees it on the same machine. Writes benchmarks/DASHBOARD.md.
"""

from __future__ import annotations

import argparse
import http.cookiejar
import statistics
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

from benchcelery.store.server import free_port
from benchmarks import env as envmod
from benchmarks.common import say

JOBS = 100_000
FAILED_PER_QUEUE = 1_000
QUEUES = ("short", "default", "long")
OUT = Path(__file__).resolve().parent / "DASHBOARD.md"


def fill(env: envmod.Env) -> None:
    import benchcelery
    from benchcelery.jobs import registry

    per_site = JOBS // envmod.SITES
    for i in range(envmod.SITES):
        site = envmod.site_name(i)
        benchcelery.init(site=site, bench_path=str(env.bench.root))
        items = [{"method": "bcbench.tasks.incr", "queue": QUEUES[n % 3], "n": n} for n in range(per_site)]
        for start in range(0, len(items), 5_000):
            benchcelery.enqueue_many(items[start : start + 5_000])
    rt = benchcelery.runtime.get_runtime()
    for q in QUEUES:
        for n in range(FAILED_PER_QUEUE):
            site = envmod.site_name(n % envmod.SITES)
            record = {
                "job_id": f"{site}::failed-{q}-{n}",
                "site": site,
                "queue": q,
                "method": "bcbench.tasks.incr",
                "kwargs": {"n": n},
                "exception": "ValueError: benchmark failure",
                "traceback": 'Traceback (most recent call last):\n  File "x.py", line 1\nValueError: failure\n',
            }
            registry.record_failure(rt.redis, rt.keys, q, record, limit=FAILED_PER_QUEUE, ttl=7 * 86400)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=30)
    args = parser.parse_args()
    env = envmod.create()
    proc = None
    try:
        say(f"filling {JOBS:,} waiting jobs over {envmod.SITES} sites and {FAILED_PER_QUEUE * 3:,} failed records")
        fill(env)
        bench_bin = str(envmod.BIN / "bench")
        run = {"cwd": env.bench.root, "env": env.child_env(), "capture_output": True, "text": True}
        token = subprocess.run([bench_bin, "dashboard", "token", "--user", "bench"], check=True, **run).stdout.strip()  # type: ignore[call-overload]
        pending = subprocess.run([bench_bin, "--site", "all", "show-pending-jobs"], check=True, **run).stdout  # type: ignore[call-overload]
        say(pending.strip().splitlines()[-3])
        port = free_port()
        proc = subprocess.Popen(
            [bench_bin, "dashboard", "--port", str(port)],
            cwd=env.bench.root,
            env=env.child_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}"
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        deadline = time.monotonic() + 30
        while True:
            try:
                opener.open(f"{url}/health", timeout=2).read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        opener.open(f"{url}/login", data=urllib.parse.urlencode({"token": token, "next": "/"}).encode()).read()
        site, last = envmod.site_name(7), envmod.site_name(envmod.SITES - 1)
        pages = {
            "overview (full page)": "/",
            "overview (live refresh)": "/partial/overview",
            "failed jobs (3,000, page 1)": "/failed",
            "failed jobs, text filter": "/failed?text=benchmark&site=" + site,
            "queued jobs, page 1": f"/jobs?site={site}&queue=default",
            "queued jobs, page 20": f"/jobs?site={site}&queue=default&page=20",
            "queued jobs, last site (31,666 jobs ahead)": f"/jobs?site={last}&queue=default",
            "scheduler": f"/scheduler?site={site}",
        }
        rows = []
        for name, path in pages.items():
            times = []
            for i in range(args.reps + 3):
                t0 = time.perf_counter()
                with opener.open(url + path, timeout=30) as resp:
                    body = resp.read()
                    assert resp.status == 200 and b"Log in" not in body, (path, resp.status)
                if i >= 3:
                    times.append((time.perf_counter() - t0) * 1000)
            times.sort()
            p95 = times[min(len(times) - 1, int(len(times) * 0.95))]
            rows.append((name, path, statistics.median(times), p95, times[-1]))
            say(f"{name}: median {rows[-1][2]:.1f} ms, p95 {p95:.1f} ms")
        lines = [
            "# `bench dashboard` page times",
            "",
            f"{JOBS:,} waiting jobs over {envmod.SITES} sites and 3 queues, {FAILED_PER_QUEUE * 3:,} failed records, "
            f"no worker; {args.reps} requests per page after 3 warm-up ones, whole HTTP request on the same machine "
            "(`python -m benchmarks.dashboard`). Target: under 200 ms.",
            "",
            "| page | path | median ms | p95 ms | max ms |",
            "|---|---|---:|---:|---:|",
            *(f"| {n} | `{p}` | {m:.1f} | {q:.1f} | {x:.1f} |" for n, p, m, q, x in rows),
            "",
            f"Machine: {subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()} cores, "
            f"Python {sys.version.split()[0]}, {time.strftime('%Y-%m-%d', time.gmtime())}.",
            "",
        ]
        OUT.write_text("\n".join(lines))
        say(f"wrote {OUT}")
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(15)
        env.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
