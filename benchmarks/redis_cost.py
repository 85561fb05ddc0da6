"""``python -m benchmarks.redis_cost [--n 3000] [--write]``: what one job costs the Redis server.

For each system (benchcelery, rq, plain Celery), on the private Redis of the benchmark harness:
enqueue N no-op jobs one call at a time (``benchcelery.enqueue``, rq ``Queue.enqueue``, Celery
``apply_async``; plus the bulk forms), then drain them with one worker until all ran (the
worker's start-up and shutdown included, as in production). Around each phase the server's
``INFO commandstats`` (reset with ``CONFIG RESETSTAT``) and ``INFO cpu``
(``used_cpu_sys + used_cpu_user`` of the server process) are read. Per job: Redis commands and
Redis CPU for enqueue + run + completion, and from the CPU the jobs per second one Redis core
carries (a core at 100 % on this machine; in practice keep Redis well below that).

The job itself does one ``INCR`` (``INCRBY``) of a counter on the same Redis (how the harness sees it ran):
those N INCRs and the harness's own polling ``GET``s are subtracted from the command counts (not
from the CPU, where they are a few percent at most). With ``--write`` the Markdown goes into
``benchmarks/RESULTS.md`` between the ``redis-cost`` markers (the rest of the file is kept).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from benchmarks import apps, env, procs
from benchmarks.common import probe, say
from benchmarks.workers import by_name

OUT = Path(__file__).resolve().parent
START, END = "<!-- redis-cost:start -->", "<!-- redis-cost:end -->"
POLL = 0.05
OWN = ("info", "config")  # the harness's own reads and resets of the server (with subcommands)

# (label, probe enqueue method, worker name); the worker runs what the enqueue put in.
CASES = [
    ("benchcelery", "bench_enqueue", "bench worker"),
    ("benchcelery (history off)", "bench_enqueue", "bench worker"),
    ("benchcelery (enqueue_many)", "bench_enqueue_many", "bench worker"),
    ("benchcelery worker-pool 2", "bench_enqueue", "bench worker-pool 2"),
    ("rq", "rq_enqueue", "rq worker (fork)"),
    ("rq (enqueue_many)", "rq_enqueue_many", "rq worker (fork)"),
    ("plain Celery", "celery_apply_async", "celery prefork 1"),
    ("plain Celery prefork 2", "celery_apply_async", "celery prefork 2"),
]


def snapshot(r: Any) -> tuple[Counter[str], float]:
    stats = r.info("commandstats")
    calls: Counter[str] = Counter()
    for name, value in stats.items():
        cmd = name.removeprefix("cmdstat_")
        if not cmd.startswith(OWN):
            calls[cmd] = int(value["calls"])
    cpu = r.info("cpu")
    return calls, float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"])


def reset(r: Any) -> float:
    r.config_resetstat()
    cpu = r.info("cpu")
    return float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"])


def measure(world: env.Env, label: str, method: str, worker_name: str, n: int) -> dict[str, Any]:
    """One run; a label with "history off" runs with ``history_enabled: false`` (jobs/history.py)."""
    off = "history off" in label
    world.bench.update_config({"history_enabled": not off})
    try:
        return _measure(world, label, method, worker_name, n)
    finally:
        world.bench.update_config({"history_enabled": True})


def _measure(world: env.Env, label: str, method: str, worker_name: str, n: int) -> dict[str, Any]:
    r = world.redis
    world.flush()
    cpu0 = reset(r)
    out = probe(world, ["enqueue", method, str(n)], timeout=120 + n / 100)
    total = n + 50  # the probe enqueues WARMUP (50) jobs first
    enq_calls, cpu1 = snapshot(r)
    cpu1b = reset(r)
    worker = by_name([worker_name])[0]
    log = world.workdir / "logs" / f"cost-{worker_name.replace(' ', '_')}.log"
    log.parent.mkdir(exist_ok=True)
    proc = procs.spawn(worker.command(world, burst=True), world.child_env(), Path(str(worker.cwd(world))), log)
    polls = 0
    deadline = time.monotonic() + 60 + total / 20
    while int(r.get(apps.COUNTER) or 0) < total:
        polls += 1
        if time.monotonic() > deadline:
            procs.kill_group(proc)
            raise RuntimeError(f"{worker_name}: not done in time:\n{procs.log_tail(log)}")
        time.sleep(POLL)
    polls += 1
    if worker.burst_flag:
        procs.reap(proc, 60)
    else:
        procs.stop(proc, 60)
    run_calls, cpu2 = snapshot(r)
    run_calls["incrby"] -= total  # the job body's own INCR (redis-py sends INCRBY key 1)
    run_calls["get"] -= polls  # the harness's polling
    run_calls = +run_calls  # drop zero counts
    enqueue_cpu, run_cpu = cpu1 - cpu0, cpu2 - cpu1b
    per_job_cpu = (enqueue_cpu + run_cpu) / total
    return {
        "system": label,
        "enqueue": method,
        "worker": worker_name,
        "jobs": total,
        "enqueue_rate": out["rate"],
        "enqueue_commands_per_job": sum(enq_calls.values()) / total,
        "run_commands_per_job": sum(run_calls.values()) / total,
        "enqueue_cpu_us_per_job": enqueue_cpu / total * 1e6,
        "run_cpu_us_per_job": run_cpu / total * 1e6,
        "jobs_per_redis_core_s": 1 / per_job_cpu if per_job_cpu > 0 else None,
        "enqueue_breakdown": {k: round(v / total, 2) for k, v in enq_calls.most_common(8) if v / total >= 0.01},
        "run_breakdown": {k: round(v / total, 2) for k, v in run_calls.most_common(12) if v / total >= 0.01},
    }


def median_of(reps: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median Redis CPU per job, with the range of jobs/s per core over the runs."""
    ok = [r for r in reps if "error" not in r]
    if not ok:
        return reps[0]
    ok.sort(key=lambda r: r["jobs_per_redis_core_s"] or 0)
    chosen = dict(ok[len(ok) // 2])
    chosen["runs"] = len(ok)
    chosen["jobs_per_redis_core_range"] = [ok[0]["jobs_per_redis_core_s"], ok[-1]["jobs_per_redis_core_s"]]
    return chosen


def markdown(results: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        START,
        "## Redis cost per job, and the ceiling of one Redis",
        "",
        f"`python -m benchmarks.redis_cost --n {meta['n']} --reps {meta.get('reps', 1)}` ({meta['started']}, "
        f"Redis {meta['redis']}, {meta['cpus']} CPUs shared with other work). "
        "Each system enqueues N no-op jobs (+50 warm-up) from one process, then one worker drains them "
        "(start-up and shutdown included). Redis commands from `INFO commandstats` (the job's own INCR and the "
        "harness's polling GETs removed; commands run inside Lua scripts count one by one, as Redis counts "
        "them); Redis CPU is `used_cpu_sys + used_cpu_user` of the server over each phase (the job's INCR "
        "included). *Jobs/s per Redis core* = 1 / (Redis CPU per job): the server at 100 % of one core "
        "doing nothing but this — plan for well under half of it.",
        "",
        "| system | enqueue | worker | Redis cmds/job enqueue | run + completion | Redis CPU µs/job enqueue"
        " | run + completion | jobs/s per Redis core (median; range) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for res in results:
        if "error" in res:
            lines.append(f"| {res['system']} | {res['enqueue']} | {res['worker']} | failed: {res['error'][:80]} |")
            continue
        lines.append(
            f"| {res['system']} | {res['enqueue']} | {res['worker']} | {res['enqueue_commands_per_job']:.1f} | "
            f"{res['run_commands_per_job']:.1f} | {res['enqueue_cpu_us_per_job']:.0f} | {res['run_cpu_us_per_job']:.0f}"
            f" | {res['jobs_per_redis_core_s'] or 0:,.0f} ({_range(res)}) |"
        )
    lines += ["", "Commands per job, by command (enqueue / run + completion):", ""]
    for res in results:
        if "error" not in res:
            enq = ", ".join(f"{k} {v:g}" for k, v in res["enqueue_breakdown"].items())
            run = ", ".join(f"{k} {v:g}" for k, v in res["run_breakdown"].items())
            lines.append(f"- {res['system']} ({res['worker']}): {enq} / {run}")
    lines += ["", *beyond(results), "", END]
    return "\n".join(lines)


def beyond(results: list[dict[str, Any]]) -> list[str]:
    """What the numbers mean for a bench, and what to do past one Redis."""
    rate = {r["system"]: r.get("jobs_per_redis_core_s") or 0 for r in results if "error" not in r}
    ours, celery, rq = rate.get("benchcelery", 0), rate.get("plain Celery", 0), rate.get("rq", 0)
    lines = ["**Reading it.**"]
    if ours and celery and rq:
        guarantee = "the atomic fetch-and-park script, the lease, the fenced ack and the per-site counters"
        ours_vs_celery = (
            f"benchcelery's extra Redis work over plain Celery is the delivery guarantee ({guarantee})"
            if ours < celery
            else f"benchcelery does more per job than plain Celery ({guarantee}) at less Redis CPU: a busy "
            "`bench worker` of short jobs takes them in batches (one script call per batch, their acks "
            "together in the next); `worker-pool` takes one job per fetch"
        )
        lines.append(
            f"One Redis core carries about {ours:,.0f} benchcelery jobs/s (enqueued one by one, run by "
            f"`bench worker`), against {celery:,.0f} for plain Celery and {rq:,.0f} for rq. {ours_vs_celery}; "
            "rq's is its job hashes and registries "
            "(HSET/EXPIRE per state change). Redis runs commands on one thread, so this is the ceiling of one "
            "Redis whatever the number of workers or hosts; long jobs cost the same per job, so a bench "
            "reaches it only with many short jobs."
        )
    lines += [
        "",
        "**Beyond one Redis.** Benches never share keys, so the way out is more Redis instances: give "
        "each bench (or each group of benches) its own `redis_queue`. Redis Cluster does not help a bench: "
        "kombu has no Cluster transport (only `redis`, `rediss`, `sentinel`), and the queue's operations are "
        "multi-key — BRPOP over several lists, MULTI/EXEC of a push with its counter, the fetch script over "
        "the queue lists and the in-flight keys — which Cluster refuses with CROSSSLOT unless every key "
        "hashes to one slot (a `{hash tag}`), which puts the whole bench on one shard again. Sentinel adds "
        "failover, not capacity: replicas are not written to, and reads all go to the master.",
    ]
    return lines


def _range(res: dict[str, Any]) -> str:
    low, high = res.get("jobs_per_redis_core_range") or [None, None]
    return f"{low:,.0f} to {high:,.0f}" if low and high else "1 run"


def write_section(text: str) -> None:
    path = OUT / "RESULTS.md"
    current = path.read_text() if path.exists() else ""
    if START in current and END in current:
        before, rest = current.split(START, 1)
        after = rest.split(END, 1)[1]
        current = before + text + after
    else:
        current = current.rstrip("\n") + "\n\n" + text + "\n"
    path.write_text(current)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.redis_cost")
    parser.add_argument("--n", type=int, default=3000, help="jobs per system (default 3000)")
    parser.add_argument("--reps", type=int, default=3, help="runs per system; the median is reported (default 3)")
    parser.add_argument("--only", help="comma-separated system labels")
    parser.add_argument("--write", action="store_true", help="update the section in benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    cases = [c for c in CASES if not args.only or c[0] in {x.strip() for x in args.only.split(",")}]
    world = env.create()
    results: list[dict[str, Any]] = []
    try:
        meta = {
            "n": args.n,
            "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "redis": world.redis.info("server")["redis_version"],
            "cpus": os.cpu_count(),
        }
        runs: dict[str, list[dict[str, Any]]] = {label: [] for label, _, _ in cases}
        for rep in range(args.reps):  # interleaved, so a slow moment of the machine hits every system
            for label, method, worker in cases:
                say(f"redis cost: {label} ({method} + {worker}), rep {rep + 1}/{args.reps}")
                try:
                    res = measure(world, label, method, worker, args.n)
                except (RuntimeError, procs.Timeout) as exc:
                    say(f"  FAILED: {exc}")
                    runs[label].append({"system": label, "enqueue": method, "worker": worker, "error": str(exc)})
                    continue
                say(
                    f"  {res['enqueue_commands_per_job']:.1f} + {res['run_commands_per_job']:.1f} commands/job, "
                    f"{res['enqueue_cpu_us_per_job']:.0f} + {res['run_cpu_us_per_job']:.0f} Redis CPU us/job, "
                    f"{res['jobs_per_redis_core_s'] or 0:,.0f} jobs/s per Redis core"
                )
                runs[label].append(res)
        results = [median_of(reps) for reps in runs.values()]
        meta["reps"] = args.reps
    finally:
        procs.kill_all()
        world.close()
    (OUT / "redis-cost.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    text = markdown(results, meta)
    print(text)
    if args.write:
        write_section(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
