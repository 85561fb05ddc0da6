"""Sites sharing a queue: starvation, weighted turns, drain cost, show-pending-jobs, rate limits.

    python -m benchmarks.fairness [--only starvation,fairness,drain,pending,rate] [--output FILE]

Each scenario runs on a private Redis and a fresh bench whose app ``fairapp`` records, for every job,
the site and the time it ran (``fair:ran`` on the broker Redis, outside the bench's prefix).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from benchcelery.bench.layout import Bench
from benchcelery.deploy.scaffold import add_app, create_bench
from benchcelery.store.server import free_port, start_server, stop_server
from benchmarks.env import BIN

APP = "fairapp"
_TASKS = '''"""Jobs of the fairness benchmark: each records its site and when it ran."""

import json
import os
import time

import benchcelery
import redis

_client = None


def _r():
    global _client
    if _client is None:
        _client = redis.Redis.from_url(os.environ["FAIR_REDIS"])
    return _client


def stamp(ms=0, sent=0.0):
    if ms:
        time.sleep(ms / 1000)
    _r().rpush("fair:ran", json.dumps([benchcelery.local.site, time.time(), sent]))
'''


@dataclass
class Rig:
    bench: Bench
    r: redis.Redis
    url: str
    proc: subprocess.Popen[bytes]
    workers: list[subprocess.Popen[bytes]]

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BENCH_", "FRAPPE_"))}
        env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
        env["FAIR_REDIS"] = self.url
        return env

    def worker(self, *args: str) -> subprocess.Popen[bytes]:
        log = open(self.bench.root / "logs" / f"w{len(self.workers)}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [str(BIN / "bench"), "worker", "--quiet", *args],
            cwd=self.bench.root,
            env=self.env(),
            stdout=log,
            stderr=log,
        )
        self.workers.append(proc)
        return proc

    def enqueue(self, site: str, n: int, **kwargs: Any) -> None:
        """``n`` jobs of ``site`` through the library's enqueue_many (batched MULTIs)."""
        code = (
            "import benchcelery, sys, json\n"
            "benchcelery.init(site=sys.argv[1], bench_path=sys.argv[2])\n"
            "kw = json.loads(sys.argv[4])\n"
            "jobs = [dict(method='fairapp.tasks.stamp', kwargs=kw) for _ in range(int(sys.argv[3]))]\n"
            "benchcelery.enqueue_many(jobs)\n"
        )
        subprocess.run(
            [sys.executable, "-c", code, site, str(self.bench.root), str(n), json.dumps(kwargs)],
            check=True,
            env=self.env(),
        )

    def ran(self) -> list[tuple[str, float, float]]:
        return [tuple(json.loads(x)) for x in self.r.lrange("fair:ran", 0, -1)]  # type: ignore[misc]

    def wait_ran(self, n: int, timeout: float) -> None:
        deadline = time.time() + timeout
        while self.r.llen("fair:ran") < n:
            if time.time() > deadline:
                raise TimeoutError(f"{self.r.llen('fair:ran')}/{n} jobs ran after {timeout} s")
            time.sleep(0.02)

    def redis_cpu(self) -> float:
        info = self.r.info("cpu")
        return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


@contextmanager
def rig(sites: list[str], workdir: Path) -> Iterator[Rig]:
    port = free_port()
    proc = start_server(port, workdir / "redis")
    url = f"redis://127.0.0.1:{port}/0"
    bench = create_bench(workdir / "bench", redis_url=url)
    bench.update_config({"bench_id": "fair"})
    app = bench.root / "apps" / APP
    app.mkdir(parents=True, exist_ok=True)
    (app / "__init__.py").write_text("")
    (app / "hooks.py").write_text("scheduler_events: dict = {}\n")
    (app / "tasks.py").write_text(_TASKS)
    add_app(bench, APP)
    for site in sites:
        bench.new_site(site, {})
    (bench.root / "logs").mkdir(exist_ok=True)
    out = Rig(bench, redis.Redis(port=port), url, proc, [])
    try:
        yield out
    finally:
        for w in out.workers:
            if w.poll() is None:
                w.kill()
                w.wait(10)
        stop_server(proc)


def starvation(workdir: Path, backlog: int = 20000) -> dict[str, Any]:
    """One worker; ``backlog`` jobs of site A, then one of B: how long B waits, how many of A run first."""
    with rig(["a.local", "b.local"], workdir) as rg:
        rg.enqueue("a.local", backlog)
        sent = time.time()
        rg.enqueue("b.local", 1, sent=sent)
        rg.worker("--queue", "default")
        deadline = time.time() + 3600
        while not any(s == "b.local" for s, _, _ in rg.ran()[-50:]):
            if time.time() > deadline:
                raise TimeoutError("B never ran")
            time.sleep(0.05)
        ran = rg.ran()
        b_index = next(i for i, (s, _, _) in enumerate(ran) if s == "b.local")
        b_at = ran[b_index][1]
        per_job = (ran[-1][1] - ran[0][1]) / max(1, len(ran) - 1)
        return {"backlog": backlog, "a_before_b": b_index, "b_wait_s": round(b_at - sent, 3), "job_s": per_job}


def fairness(workdir: Path) -> dict[str, Any]:
    """10 sites with unequal backlogs (200..2000) and weights (the first three 2, the rest 1); one
    worker; each site's share of the turns while every site still had jobs, against its weight share."""
    sites = [f"s{i}.local" for i in range(10)]
    weights = {s: (2 if i < 3 else 1) for i, s in enumerate(sites)}
    backlogs = {s: 200 * (i + 1) for i, s in enumerate(sites)}
    with rig(sites, workdir) as rg:
        for s in sites:
            if weights[s] != 1:
                rg.bench.update_config({"queue_weight": weights[s]}, site=s)
            rg.enqueue(s, backlogs[s])
        rg.worker("--queue", "default")
        # until the smallest backlog (weight 2) runs out: 200 / (2/13) = 1300 turns
        window = int(min(backlogs[s] / (weights[s] / sum(weights.values())) for s in sites)) - 20
        rg.wait_ran(window, 600)
        turns = Counter(s for s, _, _ in rg.ran()[:window])
        total_w = sum(weights.values())
        rows = {}
        for s in sites:
            expected = weights[s] / total_w
            share = turns[s] / window
            rows[s] = {
                "weight": weights[s],
                "share": round(share, 4),
                "expected": round(expected, 4),
                "error_pct": round(100 * (share - expected) / expected, 2),
            }
        return {"window": window, "sites": rows, "max_error_pct": max(abs(v["error_pct"]) for v in rows.values())}


def drain(workdir: Path, n_sites: int, jobs: int = 20000, runs: int = 3) -> dict[str, Any]:
    """Drain ``jobs`` no-op jobs spread over ``n_sites`` sites with one burst worker: jobs/s and
    Redis CPU per job (median of ``runs``)."""
    sites = [f"d{i}.local" for i in range(n_sites)]
    rates, cpus = [], []
    with rig(sites, workdir) as rg:
        for _ in range(runs):
            rg.r.delete("fair:ran")
            for s in sites:
                rg.enqueue(s, jobs // n_sites)
            cpu0 = rg.redis_cpu()
            w = rg.worker("--queue", "default", "--burst")
            rg.wait_ran(jobs, 900)
            ran = rg.ran()
            w.wait(60)
            cpu = rg.redis_cpu() - cpu0
            rates.append((len(ran) - 1) / (ran[-1][1] - ran[0][1]))
            cpus.append(cpu / jobs * 1e6)
    return {
        "sites": n_sites,
        "jobs": jobs,
        "jobs_per_s": round(statistics.median(rates), 1),
        "redis_cpu_us_per_job": round(statistics.median(cpus), 1),
        "runs": [round(x, 1) for x in rates],
    }


def pending(workdir: Path, jobs: int = 100000, n_sites: int = 1000) -> dict[str, Any]:
    """``bench show-pending-jobs`` (whole bench, text) with ``jobs`` waiting over ``n_sites`` sites."""
    sites = [f"p{i}.local" for i in range(n_sites)]
    with rig(sites, workdir) as rg:
        per = jobs // n_sites
        code = (
            "import benchcelery, sys\n"
            "for s in sys.argv[2:]:\n"
            "    benchcelery.init(site=s, bench_path=sys.argv[1])\n"
            f"    benchcelery.enqueue_many([dict(method='fairapp.tasks.stamp') for _ in range({per})])\n"
        )
        subprocess.run([sys.executable, "-c", code, str(rg.bench.root), *sites], check=True, env=rg.env())
        times = []
        for _ in range(3):
            t = time.perf_counter()
            out = subprocess.run(
                [str(BIN / "bench"), "--site", "all", "show-pending-jobs"],
                cwd=rg.bench.root,
                env=rg.env(),
                capture_output=True,
                text=True,
                check=True,
            )
            times.append(time.perf_counter() - t)
        lines = out.stdout.count("\n")
        return {"jobs": jobs, "sites": n_sites, "seconds": round(statistics.median(times), 3), "output_lines": lines}


def rate(workdir: Path, jobs: int = 300, limit: str = "10/s", workers: int = 4) -> dict[str, Any]:
    """``workers`` workers on one queue, a method limited to ``limit`` in common_site_config: the
    achieved rate over the run (first to last start)."""
    with rig(["r.local"], workdir) as rg:
        rg.bench.update_config({"rate_limits": {"fairapp.tasks.stamp": limit}})
        rg.enqueue("r.local", jobs)
        for _ in range(workers):
            rg.worker("--queue", "default")
        rg.wait_ran(jobs, 600)
        stamps = sorted(t for _, t, _ in rg.ran())
        span = stamps[-1] - stamps[0]
        achieved = (len(stamps) - 1) / span
        per_second = Counter(int(t - stamps[0]) for t in stamps)
        full = [per_second[k] for k in range(1, int(span))]
        return {
            "limit": limit,
            "workers": workers,
            "jobs": jobs,
            "achieved_per_s": round(achieved, 3),
            "error_pct": round(100 * (achieved - 10) / 10, 2),
            "per_second_min": min(full) if full else None,
            "per_second_max": max(full) if full else None,
        }


SCENARIOS = {
    "starvation": lambda d: starvation(d),
    "fairness": fairness,
    "drain": lambda d: [drain(d / "one", 1), drain(d / "hundred", 100)],
    "pending": pending,
    "rate": rate,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fairness")
    parser.add_argument("--only", default=",".join(SCENARIOS))
    parser.add_argument("--output", default="")
    args = parser.parse_args(argv)
    results: dict[str, Any] = {}
    for name in args.only.split(","):
        with tempfile.TemporaryDirectory(prefix=f"fair-{name}-") as tmp:
            results[name] = SCENARIOS[name](Path(tmp))
        print(name, json.dumps(results[name], indent=1), flush=True)
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
