"""FIELD.md and field.json from a ``python -m benchmarks field`` run: medians over the repetitions,
one table row per worker configuration, the enqueue table per system, and the targets with PASS /
MISS verdicts computed from those medians."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from benchmarks.peers import SYSTEMS
from benchmarks.tables import TIMES
from benchmarks.targets import Target


def _ok(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if "error" not in r]


def median(rows: list[dict[str, Any]], key: str, **match: Any) -> float | None:
    vals = [r[key] for r in _ok(rows) if all(r.get(k) == v for k, v in match.items()) and r.get(key) is not None]
    return statistics.median(vals) if vals else None


def fmt(v: float | None, digits: int = 0) -> str:
    if v is None:
        return ""
    if digits == 0 and abs(v) >= 100:
        return f"{v:,.0f}"
    return f"{v:,.{max(digits, 1 if abs(v) < 100 else 0)}f}" if abs(v) >= 10 or digits else f"{v:.2f}"


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def targets(data: dict[str, Any]) -> list[Target]:
    dr, idle, enq = data.get("drain", []), data.get("idle", []), data.get("enqueue", [])
    bw, huey, solo = "bench worker", "huey -w1 -k thread", "celery solo"
    so = "bench worker --pool solo"

    def d(cfg: str, key: str) -> float | None:
        return median(dr, key, config=cfg)

    def i(key: str, cfg: str = bw) -> float | None:
        return median(idle, key, config=cfg)

    def e(sys_key: str) -> float | None:
        return median(enq, "rate", system=sys_key, kind="single")

    return [
        Target("drain: bench worker / huey", _ratio(d(bw, "e2e_rate"), d(huey, "e2e_rate")), f"≥ 1.0{TIMES}",
               lambda v: v >= 1.0, "jobs/s spawn to last job, medians"),
        Target("drain: bench worker-pool 2 / bench worker",
               _ratio(d("bench worker-pool 2", "e2e_rate"), d(bw, "e2e_rate")), f"≥ 1.3{TIMES}",
               lambda v: v >= 1.3, "jobs/s spawn to last job, medians"),
        Target("worker CPU per job: bench worker / huey", _ratio(d(bw, "cpu_us_per_job"), d(huey, "cpu_us_per_job")),
               f"≤ 1.5{TIMES}", lambda v: v <= 1.5, "CPU µs/job of the whole worker tree, medians"),
        Target("Redis commands per job (run + completion): bench worker", d(bw, "redis_commands_per_job"), "≤ 10",
               lambda v: v <= 10, "commandstats deltas over the drain"),
        Target("Redis CPU per job: bench worker / celery solo",
               _ratio(d(bw, "redis_cpu_us_per_job"), d(solo, "redis_cpu_us_per_job")), f"≤ 1.0{TIMES}",
               lambda v: v <= 1.0, "Redis server CPU over the drain, medians"),
        Target("Redis CPU per job: bench worker / huey",
               _ratio(d(bw, "redis_cpu_us_per_job"), d(huey, "redis_cpu_us_per_job")), f"≤ 1.5{TIMES}",
               lambda v: v <= 1.5, "Redis server CPU over the drain, medians"),
        Target("single enqueue: benchcelery.enqueue / huey", _ratio(e("bench"), e("huey")), f"≥ 1.2{TIMES}",
               lambda v: v >= 1.2, "jobs/s from one process, medians"),
        Target("enqueue → start, idle bench worker: median ms", i("latency_median_ms"), "≤ 1.5 ms",
               lambda v: v <= 1.5, "keyspace notification of the job's INCR"),
        Target("enqueue → start, idle bench worker: p99 ms", i("latency_p99_ms"), "≤ 5 ms",
               lambda v: v <= 5, "median over repetitions of each run's p99"),
        Target("bench worker --burst: spawn → first job, s", d(bw, "spawn_to_first_s"), "≤ 0.3 s",
               lambda v: v <= 0.3, "drain runs, medians"),
        Target("idle RSS, bench worker (whole tree), MB", i("rss_tree_mb"), "≤ 60 MB",
               lambda v: v <= 60, "after one job and a settle"),
        # The same targets for `bench worker --pool solo` (the job in the worker's own process).
        Target("drain: bench worker --pool solo / huey", _ratio(d(so, "e2e_rate"), d(huey, "e2e_rate")),
               f"≥ 1.0{TIMES}", lambda v: v >= 1.0, "jobs/s spawn to last job, medians"),
        Target("worker CPU per job: bench worker --pool solo / huey",
               _ratio(d(so, "cpu_us_per_job"), d(huey, "cpu_us_per_job")), f"≤ 1.5{TIMES}", lambda v: v <= 1.5,
               "CPU µs/job of the whole worker tree, medians"),
        Target("enqueue → start, idle bench worker --pool solo: median ms", i("latency_median_ms", so), "≤ 1.5 ms",
               lambda v: v <= 1.5, "keyspace notification of the job's INCR"),
        Target("enqueue → start, idle bench worker --pool solo: p99 ms", i("latency_p99_ms", so), "≤ 5 ms",
               lambda v: v <= 5, "median over repetitions of each run's p99"),
        Target("idle RSS, bench worker --pool solo (whole tree), MB", i("rss_tree_mb", so), "≤ 60 MB",
               lambda v: v <= 60, "after one job and a settle"),
    ]


def _drain_table(data: dict[str, Any]) -> list[str]:
    dr, idle = data.get("drain", []), data.get("idle", [])
    lines = [
        "| worker | drain jobs/s (spawn→last; first→last) | worker CPU µs/job | Redis cmds/job | Redis CPU µs/job"
        " | enqueue→start median / p99 ms | burst spawn→first s | idle RSS MB (procs) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    configs = list(dict.fromkeys(r["config"] for r in dr + idle))
    for cfg in configs:
        def d(key: str, cfg: str = cfg) -> float | None:
            return median(dr, key, config=cfg)

        def i(key: str, cfg: str = cfg) -> float | None:
            return median(idle, key, config=cfg)

        errors = [r for r in dr + idle if r.get("config") == cfg and "error" in r]
        note = f" ({len(errors)} failed run(s))" if errors else ""
        procs = i("procs")
        lines.append(
            f"| {cfg}{note} | {fmt(d('e2e_rate'))}; {fmt(d('steady_rate'))} | {fmt(d('cpu_us_per_job'))} | "
            f"{fmt(d('redis_commands_per_job'), 1)} | {fmt(d('redis_cpu_us_per_job'))} | "
            f"{fmt(i('latency_median_ms'), 1)} / {fmt(i('latency_p99_ms'), 1)} | {fmt(d('spawn_to_first_s'), 2)} | "
            f"{fmt(i('rss_tree_mb'))}{f' ({procs:.0f})' if procs else ''} |"
        )
    return lines


def _enqueue_table(data: dict[str, Any]) -> list[str]:
    enq = data.get("enqueue", [])
    lines = ["| system | single enqueue jobs/s | client CPU µs/job | bulk enqueue jobs/s (method) |"]
    lines.append("|---|---|---|---|")
    for s in SYSTEMS:
        if not any(r.get("system") == s.key for r in enq):
            continue
        single = median(enq, "rate", system=s.key, kind="single")
        cpu = median(enq, "cpu_us_per_job", system=s.key, kind="single")
        bulk = median(enq, "rate", system=s.key, kind="bulk")
        lines.append(f"| {s.label} | {fmt(single)} | {fmt(cpu)} | {fmt(bulk)}{f' ({s.bulk})' if s.bulk else ''} |")
    return lines


def _breakdown(data: dict[str, Any]) -> list[str]:
    seen: dict[str, dict[str, float]] = {}
    for r in _ok(data.get("drain", [])):
        seen.setdefault(r["config"], r["breakdown"])
    return [f"- {cfg}: " + ", ".join(f"{k} {v:g}" for k, v in b.items()) for cfg, b in seen.items()]


def markdown(data: dict[str, Any]) -> str:
    meta = data["meta"]
    m, plan = meta["machine"], meta["plan"]
    reps = f"{plan['reps']} interleaved repetition(s)" + (f", capped: {plan['capped']}" if plan["capped"] else "")
    out = [
        "# benchcelery against the field",
        "",
        f"`{' '.join(meta['argv'])}` ({meta['started']}, {meta['duration_s'] / 60:.0f} min; "
        f"{'quick sizes' if plan['quick'] else 'full sizes'}: {plan['drain_n']:,} jobs per drain, "
        f"{plan['enqueue_n']:,} per enqueue run, up to {plan['latency_n']} latency samples; {reps}; medians). "
        f"{m['nproc']} CPUs ({m['cpu_model']}), shared with other work; {m['python']}; Redis {m['redis_server']}; "
        f"commit {m.get('commit')}.",
        "",
        "Versions: " + "; ".join(f"{label} " + ", ".join(f"{d} {v}" for d, v in vs.items())
                                for label, vs in meta["versions"].items()) + ".",
    ]
    if meta.get("skipped"):
        out += ["", "Skipped: " + "; ".join(meta["skipped"]) + "."]
    out += [
        "",
        "The job everywhere: one `INCR` of a counter on the same Redis. Drain: the queue pre-filled, the worker "
        "spawned (in burst mode where it has one, else SIGTERM at the last job). Worker CPU: the whole process tree, "
        "spawn to exit. Redis commands and CPU per job: `INFO commandstats` / `INFO cpu` deltas over the drain "
        "(worker start-up and shutdown included; the job's INCR and the harness's polling GETs removed). "
        "Enqueue → start: one job at a time against an idle worker, until the job's INCR shows as a keyspace "
        "notification. Idle RSS: the whole tree after one job and a settle.",
        "",
        "## Targets",
        "",
        "| target | measured | goal | verdict | basis |",
        "|---|---|---|---|---|",
    ]
    for t in targets(data):
        out.append(f"| {t.name} | {fmt(t.value, 2)} | {t.target} | {t.verdict} | {t.basis} |")
    out += ["", "## Workers", "", *_drain_table(data), "", "## Enqueue", "", *_enqueue_table(data)]
    out += ["", "## Redis commands per job during a drain, by command (first run)", "", *_breakdown(data)]
    out += ["", "## Commands", "", "| worker | command | burst command |", "|---|---|---|"]
    for name, c in meta["commands"].items():
        out.append(f"| {name} | `{c['worker']}` | {('`' + c['burst'] + '`') if 'burst' in c else ''} |")
    out += ["", "Enqueue methods (`python -m benchmarks.peers.probe enqueue METHOD N`): "
            + "; ".join(f"{s.label}: `{s.single}`" + (f", bulk `{s.bulk}`" if s.bulk else "")
                        for s in SYSTEMS if s.label in meta["versions"]) + "."]
    failures = [r for k in ("drain", "idle", "enqueue") for r in data.get(k, []) if "error" in r]
    if failures:
        out += ["", "## Failed runs", ""]
        out += [f"- {r.get('config') or r.get('method')} (rep {r['rep'] + 1}): "
                f"{r['error'].splitlines()[0][:200]}" for r in failures]
    return "\n".join(out) + "\n"


def write(data: dict[str, Any], out_dir: Path, stem: str) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    js = out_dir / f"{stem}.json"
    md = out_dir / f"{stem.upper()}.md".replace("FIELD-QUICK", "FIELD-quick")
    js.write_text(json.dumps(data, indent=1, default=str) + "\n")
    md.write_text(markdown(data))
    return md, js
