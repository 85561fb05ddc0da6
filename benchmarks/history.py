"""``python -m benchmarks.history [--reps 5] [--n 3000]``: what the job history costs.

On the benchmarks' private Redis and 20-site bench (benchmarks/env.py), writes benchmarks/HISTORY.md:

1. Redis CPU per job with the history on and off: ``redis_cost.measure`` (enqueue one by one, drain
   with one ``bench worker``), the two interleaved ``--reps`` times, medians reported.
2. The marginal Redis CPU of the history's commands alone: N jobs' commands (durations.py and
   jobs/history.py, as a worker builds them, spread over 10 sites, 3 queues, 20 methods), each job's
   with a PING, 50 jobs per pipeline (they ride in a write the worker sends anyway), against what a
   job wrote before the history (commit aea8573's duration histogram).
3. Memory: one site's history for a busy day (every minute of the last 24 hours has jobs in all
   three queues, 20 methods), then rolled up: MEMORY USAGE of the keys, per site per day.
4. The dashboard: 100,000 waiting jobs over 10 sites, one `bench dashboard`, 10 server-sent-event
   streams open for ``--seconds``: the poller's reads per second, the Redis commands per second, and
   the overview's render time (full page, median of 20 after 3 warm-up).
"""

from __future__ import annotations

import argparse
import http.client
import http.cookiejar
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from benchcelery.store.server import free_port
from benchmarks import env as envmod
from benchmarks import procs, redis_cost
from benchmarks.common import say

OUT = Path(__file__).resolve().parent / "HISTORY.md"
SITES, QUEUES, METHODS = 10, ("short", "default", "long"), 20
PENDING = 100_000
STREAMS = 10


def cost_on_off(world: envmod.Env, n: int, reps: int) -> dict[str, dict[str, Any]]:
    runs: dict[str, list[dict[str, Any]]] = {"on": [], "off": []}
    for rep in range(reps):
        for mode, label in (("on", "benchcelery"), ("off", "benchcelery (history off)")):
            res = redis_cost.measure(world, label, "bench_enqueue", "bench worker", n)
            say(
                f"history {mode} rep {rep + 1}: "
                f"{res['enqueue_cpu_us_per_job']:.0f} + {res['run_cpu_us_per_job']:.0f} us/job"
            )
            runs[mode].append(res)
    return {mode: redis_cost.median_of(rs) for mode, rs in runs.items()}


class _Collect:
    """Collects durations.observe's pipeline calls as raw commands (as the worker's request does)."""

    def __init__(self) -> None:
        self.list: list[tuple[Any, ...]] = []

    def __getattr__(self, name: str) -> Any:
        return lambda *args: self.list.append((name.upper(), *args))


def _meta(i: int, now: float) -> dict[str, Any]:
    return {
        "site": envmod.site_name(i % SITES),
        "queue": QUEUES[i % 3],
        "method": f"bcbench.tasks.m{i % METHODS}",
        "enqueued_at": now - 0.05 - (i % 7) * 0.1,
        "started_at": now - 0.002 * (i % 50),
    }


def _before(keys: Any, i: int, now: float) -> list[tuple[Any, ...]]:
    """What a finished job wrote before the history (commit aea8573's durations.observe)."""
    meta = _meta(i, now)
    key, method, run = keys.durations(meta["queue"]), meta["method"], now - meta["started_at"]
    bucket = sum(1 for b in (0.01, 0.05, 0.1, 0.25, 0.5) if run > b)
    return [
        ("HINCRBY", key, f"{method}\x1f{bucket}", 1),
        ("HINCRBYFLOAT", key, f"{method}\x1fsum", repr(round(run, 6))),
        ("HSET", key, f"{method}\x1flast", int(now)),
        ("EXPIRE", key, 7 * 86400),
    ]


def _commands(keys: Any, i: int, now: float) -> list[tuple[Any, ...]]:
    """What a finished job writes now: its duration and wait buckets, and its history."""
    from benchcelery.jobs import durations, history

    meta = _meta(i, now)
    collect = _Collect()
    durations.observe(collect, keys, meta, now=now, waits=True)
    return collect.list + history.finished(keys, meta, failed=i % 50 == 0, now=now)


def marginal_cpu(world: envmod.Env, n: int, reps: int = 5, batch: int = 50) -> dict[str, float]:
    """µs of Redis CPU per job for the history's worker-side commands, and the enqueue's HINCRBY:
    ``batch`` jobs per pipeline, each a PING plus its commands (what rides with one write costs
    its parsing and running, not another read or write), against the commands a job wrote
    before (the enqueue's against PINGs alone); interleaved ``reps`` times, the median difference."""
    from benchcelery.bench.keys import Keys
    from benchcelery.jobs import history

    history.configure(history.Retention())
    r, keys = world.redis, Keys("hb")
    now = time.time()

    def cpu() -> float:
        info = r.info("cpu")
        return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])

    def run(build: Any) -> float:
        before = cpu()
        for first in range(0, n, batch):
            pipe = r.pipeline(transaction=False)
            for i in range(first, first + batch):
                pipe.ping()
                for command in build(i):
                    pipe.execute_command(*command)
            pipe.execute()
        return (cpu() - before) / n * 1e6

    def enqueue(i: int) -> list[tuple[Any, ...]]:
        return history.simple(keys, history.ENQUEUED, envmod.site_name(i % SITES), QUEUES[i % 3], 1, now)

    worker_diffs, enqueue_diffs, bases = [], [], []
    for _ in range(reps):
        base = run(lambda i: [])
        before = run(lambda i: _before(keys, i, now))
        worker_diffs.append(run(lambda i: _commands(keys, i, now)) - before)
        enqueue_diffs.append(run(enqueue) - base)
        bases.append(base)
    _commands(keys, 1, now)  # the once-a-minute writes of this (key, method) are out of the way
    commands = len(_commands(keys, 1, now)) - len(_before(keys, 1, now))
    r.flushall()
    return {
        "ping": statistics.median(bases),
        "worker": statistics.median(worker_diffs),
        "enqueue": statistics.median(enqueue_diffs),
        "commands": commands,
        "worker_range": (min(worker_diffs), max(worker_diffs)),
    }


def memory_per_site_day(world: envmod.Env) -> dict[str, float]:
    """Bytes of one busy site's history: its last 24 hours (minute keys) and one rolled-up day."""
    from benchcelery.bench.keys import Keys
    from benchcelery.diagnostics.history import footprint
    from benchcelery.jobs import history

    r, keys = world.redis, Keys("mem")
    r.flushall()
    now = int(time.time())
    pipe = r.pipeline(transaction=False)
    for minute in range(now // 60 - 24 * 60 + 1, now // 60 + 1):
        at = minute * 60 + 30.0
        for q, queue in enumerate(QUEUES):
            for j in range(3):  # three jobs per queue and minute, different methods and waits
                i = minute * 9 + q * 3 + j
                meta = {
                    "site": "one.site",
                    "queue": queue,
                    "method": f"bcbench.tasks.m{i % METHODS}",
                    "enqueued_at": at - 0.05 * (1 + j * 20),
                    "started_at": at - 0.01 * (1 + j * 30),
                }
                history._expired.clear()  # every EXPIREAT sent: keys written out of time order
                for command in [
                    *history.finished(keys, meta, False, now=at),
                    *history.simple(keys, "e", "one.site", queue, 1, at),
                ]:
                    pipe.execute_command(*command)
        if len(pipe) > 5000:
            pipe.execute()
    pipe.execute()
    live = sum(footprint(r, keys).values())
    for hour in range(now // 3600 - 24, now // 3600):
        history.roll_hour(r, keys, hour)
    sizes = footprint(r, keys)
    rolled = sum(v for k, v in sizes.items() if any(f"hist:{p}:" in k for p in ("h", "jd", "xd")))
    r.flushall()
    # 24 hours of data land in two daily keys (two dates): their sum is one day's worth, a little
    # more than a whole date's (each of the two repeats the method fields).
    return {"live_24h": live, "rolled_per_day": rolled}


def _stream(url: str, cookie: str, stop: threading.Event, counts: list[int]) -> None:
    parsed = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)
    conn.request("GET", parsed.path, headers={"Cookie": cookie})
    resp = conn.getresponse()
    while not stop.is_set():
        line = resp.readline()
        if not line:
            break
        if line.startswith(b"event:"):
            counts[0] += 1
    conn.close()


def dashboard(world: envmod.Env, seconds: float) -> dict[str, Any]:
    import benchcelery

    world.redis.flushall()
    per_site = PENDING // SITES
    for i in range(SITES):
        benchcelery.init(site=envmod.site_name(i), bench_path=str(world.bench.root))
        items = [{"method": "bcbench.tasks.incr", "queue": QUEUES[n % 3], "n": n} for n in range(per_site)]
        for start in range(0, per_site, 5000):
            benchcelery.enqueue_many(items[start : start + 5000])
    bench_bin = str(envmod.BIN / "bench")
    run: Any = {"cwd": world.bench.root, "env": world.child_env(), "capture_output": True, "text": True}
    token = subprocess.run([bench_bin, "dashboard", "token", "--user", "bench"], check=True, **run).stdout.strip()
    port = free_port()
    proc = subprocess.Popen(
        [bench_bin, "dashboard", "--port", str(port)],
        cwd=world.bench.root,
        env=world.child_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
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
        times = []
        for i in range(23):
            t0 = time.perf_counter()
            opener.open(url + "/", timeout=30).read()
            if i >= 3:
                times.append((time.perf_counter() - t0) * 1000)
        cookie = "; ".join(f"{c.name}={c.value}" for c in jar)
        stop, counts = threading.Event(), [[0] for _ in range(STREAMS)]
        threads = [
            threading.Thread(target=_stream, args=(f"{url}/stream", cookie, stop, c), daemon=True) for c in counts
        ]
        for t in threads:
            t.start()
        time.sleep(3)  # every stream open and served
        stats0 = _stats(opener, url)
        world.redis.config_resetstat()
        t0 = time.monotonic()
        time.sleep(seconds)
        calls = sum(int(v["calls"]) for v in world.redis.info("commandstats").values())
        stats1 = _stats(opener, url)
        elapsed = time.monotonic() - t0
        stop.set()
        return {
            "overview_ms": statistics.median(times),
            "overview_p95_ms": sorted(times)[int(len(times) * 0.95)],
            "streams": stats1["streams"],
            "reads_per_s": (stats1["reads"] - stats0["reads"]) / elapsed,
            "commands_per_s": calls / elapsed,
            "events_per_stream_per_s": statistics.mean(c[0] for c in counts) / (elapsed + 3),
            "seconds": elapsed,
        }
    finally:
        proc.terminate()
        proc.wait(10)


def _stats(opener: Any, url: str) -> dict[str, Any]:
    import json

    return json.loads(opener.open(f"{url}/api/stream", timeout=10).read())


def markdown(
    cost: dict[str, dict[str, Any]],
    marginal: dict[str, float],
    memory: dict[str, float],
    dash: dict[str, Any],
    args: argparse.Namespace,
) -> str:
    on, off = cost["on"], cost["off"]

    def total(res: dict[str, Any]) -> float:
        return res["enqueue_cpu_us_per_job"] + res["run_cpu_us_per_job"]

    per_job_off = total(off)
    added = marginal["worker"] + marginal["enqueue"]
    return "\n".join(
        [
            "# Job history: what it costs",
            "",
            f"`python -m benchmarks.history --reps {args.reps} --n {args.n}` "
            f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
            f"2 CPUs shared with other work). Writes this file.",
            "",
            "## Redis CPU per job, history on and off",
            "",
            "`redis_cost.measure` (each job enqueued one by one, drained by one `bench worker`), on and off "
            f"interleaved, {args.reps} runs each, the median run:",
            "",
            "| history | Redis cmds/job enqueue | run + completion | Redis CPU µs/job enqueue | run + completion"
            " | total |",
            "|---|---:|---:|---:|---:|---:|",
            *(
                f"| {m} | {r['enqueue_commands_per_job']:.1f} | {r['run_commands_per_job']:.1f} | "
                f"{r['enqueue_cpu_us_per_job']:.0f} | {r['run_cpu_us_per_job']:.0f} | {total(r):.0f} |"
                for m, r in (("off", off), ("on", on))
            ),
            "",
            f"The whole-run CPU figures move by more than the history's share from run to run (ranges: on "
            f"{redis_cost._range(on)}, off {redis_cost._range(off)} jobs/s per core), so its cost is measured "
            "on its own too, each job's commands sent in a pipeline with a PING (as they ride with the "
            "worker's ack write): what a finished job writes now (duration and wait buckets, history) against "
            "what it wrote before (commit aea8573's duration histogram), and the enqueue's HINCRBY against the "
            f"PINGs alone; {marginal['commands']:+.0f} commands per job (plus an EXPIREAT per key and process "
            "once a minute), "
            f"{args.marginal_n:,} jobs, 50 per pipeline, 5 interleaved runs, the median difference:",
            "",
            f"- worker side (started and done/failed, wait bucket, run and wait histograms, wait buckets of "
            f"`bench metrics`, a new longest run): "
            f"**{marginal['worker']:.1f} µs** per job (runs: {marginal['worker_range'][0]:.1f} to "
            f"{marginal['worker_range'][1]:.1f})",
            f"- enqueue side (one HINCRBY in the push's MULTI): **{marginal['enqueue']:.1f} µs** per job",
            f"- together {added:.1f} µs against {per_job_off:.0f} µs per job with the history off: "
            f"**+{added / per_job_off * 100:.1f} %** Redis CPU per job (limit: +10 %).",
            "",
            "## Memory",
            "",
            f"One busy site (jobs every minute of the day in 3 queues, {METHODS} methods, 3 wait buckets per "
            "queue and minute), MEMORY USAGE of its keys:",
            "",
            f"- the last 24 hours at minute resolution (minute counters, hourly method histograms): "
            f"**{memory['live_24h'] / 1024:.0f} KiB** per site",
            f"- each day kept after that (hourly counters, daily method histograms and longest runs): "
            f"**{memory['rolled_per_day'] / 1024:.1f} KiB** per site and day; 30 days: "
            f"{(memory['live_24h'] + 30 * memory['rolled_per_day']) / 1024 / 1024:.2f} MiB per site in all",
            "",
            "Every key expires (minute keys after `history_minutes_ttl` + 1 h, daily ones after "
            "`history_hours_ttl` + 1 day); a quiet site or minute writes nothing.",
            "",
            "## Dashboard: the overview and its stream",
            "",
            f"{PENDING:,} waiting jobs over {SITES} sites, one `bench dashboard`, {dash['streams']} server-sent-event "
            f"streams open for {dash['seconds']:.0f} s:",
            "",
            f"- the shared poller's Redis reads: **{dash['reads_per_s']:.2f} per second** (one pipelined read each, "
            f"whatever the number of streams); every stream got {dash['events_per_stream_per_s']:.2f} frames "
            "per second",
            f"- all Redis commands the dashboard sent meanwhile (the chart read every second, the overview's "
            f"tables every 5 s): {dash['commands_per_s']:.1f} per second",
            f"- the overview page (charts and tables, server-rendered): median **{dash['overview_ms']:.0f} ms**, "
            f"p95 {dash['overview_p95_ms']:.0f} ms (20 requests after 3 warm-up, whole HTTP request)",
            "",
        ]
    )


def _synthetic_methods() -> None:
    """The benchmark's method names are made up (no app has them): count them under their own
    names, as installed methods are, not all under ``[refused]``."""
    from benchcelery.jobs import durations, history

    durations.label = history.label = str  # type: ignore[assignment]


def main(argv: list[str]) -> int:
    _synthetic_methods()
    parser = argparse.ArgumentParser(prog="python -m benchmarks.history")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--marginal-n", type=int, default=50000)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    world = envmod.create()
    try:
        cost = cost_on_off(world, args.n, args.reps)
        world.flush()
        marginal = marginal_cpu(world, args.marginal_n)
        say(f"marginal: {marginal}")
        memory = memory_per_site_day(world)
        say(f"memory: {memory}")
        dash = dashboard(world, args.seconds)
        say(f"dashboard: {dash}")
    finally:
        procs.kill_all()
        world.close()
    text = markdown(cost, marginal, memory, dash, args)
    OUT.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
