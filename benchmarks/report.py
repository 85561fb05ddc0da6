"""RESULTS.md (median [min-max] tables, ratios against the performance targets) and the raw JSON."""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import Summary, summary
from benchmarks.enqueue import METHODS
from benchmarks.workers import WORKERS

DASH = "\u2013"  # en dash, for ranges and empty cells
TIMES = "\u00d7"


def num(x: float | None) -> str:
    if x is None:
        return DASH
    if float(x).is_integer():
        return f"{x:,.0f}"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    if abs(x) >= 1:
        return f"{x:.2f}"
    return f"{x:.3f}"


def cell(s: Summary | None) -> str:
    if s is None:
        return DASH
    if s.n == 1:
        return num(s.median)
    return f"{num(s.median)} [{num(s.low)}{DASH}{num(s.high)}]"


def _ok(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if "error" not in r]


def _pick(rows: list[dict[str, Any]], key: str, **match: Any) -> Summary | None:
    return summary(r.get(key) for r in rows if all(r.get(k) == v for k, v in match.items()))


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


@dataclass
class Target:
    name: str
    value: float | None
    target: str
    check: Callable[[float], bool]
    basis: str

    def row(self) -> list[str]:
        verdict = DASH if self.value is None else ("**PASS**" if self.check(self.value) else "**MISS**")
        return [self.name, num(self.value), self.target, verdict, self.basis]


def _median(s: Summary | None) -> float | None:
    return s.median if s else None


def _ratio(a: Summary | None, b: Summary | None) -> float | None:
    return a.median / b.median if a and b and b.median else None


def _paired(rows: list[dict[str, Any]], key: str, field: str, a: str, b: str) -> Summary | None:
    """a / b per repetition (the two ran next to each other), summarised: the noise-robust ratio."""
    by_rep: dict[Any, dict[str, float]] = {}
    for r in rows:
        if r.get(field) in (a, b) and r.get(key) is not None:
            by_rep.setdefault(r.get("rep"), {})[r[field]] = r[key]
    return summary(v[a] / v[b] for v in by_rep.values() if a in v and b in v and v[b])


def sched_idle(rec: dict[str, Any]) -> float:
    return statistics.median(t["seconds"] for t in rec["idle"])


def targets(data: dict[str, Any]) -> list[Target]:
    drain = _ok(data.get("drain", []))
    enq = _ok(data.get("enqueue", []))
    cmds = _ok(data.get("commands", []))
    mem = _ok(data.get("memory", []))
    sched = _ok(data.get("scheduler", []))

    def d(worker: str, key: str = "e2e_rate") -> Summary | None:
        return _pick(drain, key, worker=worker, workload="noop")

    def e(method: str) -> Summary | None:
        return _pick(enq, "rate", method=method)

    def c(command: str, backlog: int) -> Summary | None:
        return _pick(cmds, "seconds", kind="operator", command=command, backlog=backlog)

    def cold(command: str) -> Summary | None:
        return _pick(cmds, "seconds", kind="startup", command=command)

    def burst(worker: str) -> Summary | None:
        return _pick(drain, "whole_rate", worker=worker, workload="burst")

    def m(worker: str) -> Summary | None:
        return _pick(mem, "rss_tree_mb", worker=worker)

    backlogs = sorted({r["backlog"] for r in cmds if r.get("kind") == "operator"})
    big = max(backlogs) if backlogs else 100_000
    small = min((b for b in backlogs if b > 0), default=0)
    out = [
        Target(
            "drain no-op: bench worker / rq worker (fork)",
            _ratio(d("bench worker"), d("rq worker (fork)")),
            f"≥ 10{TIMES}",
            lambda v: v >= 10,
            "e2e jobs/s, medians",
        ),
        Target(
            "drain no-op: bench worker / celery prefork 1",
            _ratio(d("bench worker"), d("celery prefork 1")),
            f"≥ 0.85{TIMES}",
            lambda v: v >= 0.85,
            "e2e jobs/s, medians",
        ),
        Target(
            "drain no-op: bench worker-pool 2 / celery prefork 2",
            _ratio(d("bench worker-pool 2"), d("celery prefork 2")),
            f"≥ 0.85{TIMES}",
            lambda v: v >= 0.85,
            "e2e jobs/s, medians",
        ),
        Target(
            "enqueue: benchcelery.enqueue / celery apply_async",
            _ratio(e("bench_enqueue"), e("celery_apply_async")),
            f"≥ 0.9{TIMES}",
            lambda v: v >= 0.9,
            "jobs/s, medians",
        ),
        Target(
            "enqueue: benchcelery.enqueue_many / rq enqueue_many",
            _ratio(e("bench_enqueue_many"), e("rq_enqueue_many")),
            f"≥ 1{TIMES}",
            lambda v: v >= 1.0,
            "jobs/s, medians",
        ),
        Target(
            f"show-pending-jobs, {big:,} pending over 20 sites (s)",
            _median(c("bench show-pending-jobs", big)),
            "< 1 s",
            lambda v: v < 1.0,
            "cold process wall time, median",
        ),
        Target(
            f"show-pending-jobs / rq info, {small:,} pending (cold)",
            _ratio(c("bench show-pending-jobs", small), c("rq info", small)),
            f"≤ 1{TIMES}",
            lambda v: v <= 1.0,
            "wall s, medians",
        ),
        Target(
            "idle memory: bench worker / celery prefork 1",
            _ratio(m("bench worker"), m("celery prefork 1")),
            f"≤ 1.1{TIMES}",
            lambda v: v <= 1.1,
            "RSS of the tree, medians",
        ),
        Target(
            "idle memory: bench worker-pool 2 / celery prefork 2",
            _ratio(m("bench worker-pool 2"), m("celery prefork 2")),
            f"≤ 1.1{TIMES}",
            lambda v: v <= 1.1,
            "RSS of the tree, medians",
        ),
        Target(
            "scheduler tick, 10,000 entries, nothing due (s)",
            statistics.median(sched_idle(r) for r in sched) if sched else None,
            "< 1 s",
            lambda v: v < 1.0,
            "median tick",
        ),
    ]
    paired = _paired(enq, "rate", "method", "bench_enqueue", "rq_enqueue")
    out += [
        Target(
            "#13 enqueue: benchcelery.enqueue / rq Queue.enqueue",
            _ratio(e("bench_enqueue"), e("rq_enqueue")),
            f"≥ 2.5{TIMES}",
            lambda v: v >= 2.5,
            f"jobs/s, medians (per repetition: {cell(paired)})",
        ),
        Target(
            "#13 `bench enqueue` from the shell, cold (s)",
            _median(cold("bench enqueue")),
            "≤ 0.5 s",
            lambda v: v <= 0.5,
            "wall s, median",
        ),
        Target(
            "#13 `bench enqueue` / `rq enqueue`, cold",
            _ratio(cold("bench enqueue"), cold("rq enqueue")),
            f"≤ 1{TIMES}",
            lambda v: v <= 1.0,
            "wall s, medians",
        ),
        Target(
            "#13 bench worker --burst: spawn → first job (s)",
            _median(d("bench worker", "spawn_to_first_s")),
            "≤ 0.5 s",
            lambda v: v <= 0.5,
            "no-op drain, median",
        ),
        Target(
            "#13 bench worker --burst: last job → exit (s)",
            _median(d("bench worker", "last_to_exit_s")),
            "≤ 0.3 s",
            lambda v: v <= 0.3,
            "no-op drain, median",
        ),
        Target(
            "#13 burst command on few jobs: bench worker / rq worker (fork)",
            _ratio(burst("bench worker"), burst("rq worker (fork)")),
            f"≥ 15{TIMES}",
            lambda v: v >= 15,
            "whole command (spawn → exit) jobs/s, medians",
        ),
        Target(
            "#13 worker CPU per no-op job: bench worker / celery solo",
            _ratio(d("bench worker", "cpu_us_per_job"), d("celery solo", "cpu_us_per_job")),
            f"≤ 1{TIMES}",
            lambda v: v <= 1.0,
            "CPU µs/job of the process tree, medians",
        ),
        Target(
            "#13 drain no-op: bench worker / celery solo",
            _ratio(d("bench worker"), d("celery solo")),
            f"≥ 1{TIMES}",
            lambda v: v >= 1.0,
            "e2e jobs/s, medians",
        ),
        Target(
            "#13 drain no-op: bench worker-pool 2 / celery prefork 2",
            _ratio(d("bench worker-pool 2"), d("celery prefork 2")),
            f"≥ 1.1{TIMES}",
            lambda v: v >= 1.1,
            "e2e jobs/s, medians",
        ),
    ]
    return out


def render(data: dict[str, Any]) -> str:
    plan = data["meta"]["plan"]
    lines: list[str] = []
    for section in (_header, _drain, _enqueue, _commands, _memory, _scheduler, _footer):
        lines += section(data, plan)
    return "\n".join(lines)


def _header(data: dict[str, Any], plan: dict[str, Any]) -> list[str]:
    """Title, method, machine and versions, and the targets table."""
    lines: list[str] = []
    meta = data["meta"]
    title = "# benchcelery benchmarks vs rq and plain Celery"
    if plan["quick"]:
        title += " — QUICK RUN (reduced sizes; not the issue 7 results)"
    lines += [title, ""]
    lines += [
        f"Generated by `python -m benchmarks run{' --quick' if plan['quick'] else ''}"
        f"{' --only ' + ','.join(meta['only']) if meta.get('only') else ''}` on {meta['started']} "
        f"in {meta['duration_s'] / 60:.1f} min. Every figure is **median [min{DASH}max]** over the repetitions "
        f"(default {plan['reps']}), run interleaved across systems (A B C … A B C …); a single figure means one "
        "repetition. Read ratios, not absolutes: the machine is shared and virtualised. "
        "Method: [`../shared/reference/peer-performance.md`](../../shared/reference/peer-performance.md).",
        "",
        "Ratios in the targets table divide medians; for enqueue, the ratio of each repetition's pair (run "
        "one after the other) is given too, because other work on the machine moves both systems by ±30 % "
        "from one repetition to the next. The burst-command rows (issue 13) run benchcelery's and rq's "
        "burst workers on a few thousand jobs and time the whole command, spawn to exit, as cron or CI "
        "would. Speed is never asserted in tests; correctness of every fast path is (tests/).",
        "",
        "## Machine and versions",
        "",
    ]
    m = meta["machine"]
    lines += [
        f"- {m['nproc']} CPUs ({m['cpu_model']}), {num(m['memory_gb'])} GB, {m['kernel']}; load average at start "
        f"{', '.join(f'{x:.2f}' for x in m['load_avg_at_start'])}",
        f"- {m['python']}; Redis {m['redis_server']}; hiredis parser in use: {m['hiredis_in_use']} "
        "(for all three systems: they share the venv)",
        "- " + ", ".join(f"{k} {v}" for k, v in m["packages"].items()),
        f"- benchcelery commit {m['commit']}",
        "",
    ]
    lines += ["## Ratios against the targets of issues 7 and 13 (#13)", ""]
    lines += _table(["target", "measured", "target", "verdict", "basis"], [t.row() for t in targets(data)])
    lines += [""]
    return lines


def _drain(data: dict[str, Any], plan: dict[str, Any]) -> list[str]:
    """Section 1: draining a pre-filled queue."""
    lines: list[str] = []
    drain = _ok(data.get("drain", []))
    if data.get("drain"):
        lines += [
            "## 1. Drain a pre-filled queue",
            "",
            "e2e = jobs / (spawn of the worker CLI → last job executed); steady = jobs after the first / time "
            "after the first; CPU = user+system of the worker's whole process tree (pool processes, rq work "
            "horses) from spawn to exit, per job; peak RSS = sampled sum over the tree (every 0.25 s); max RSS = "
            "the largest single process (ru_maxrss). Burst workers exit by themselves; plain Celery gets SIGTERM "
            "at the last job. benchcelery workers consume all bench queues (as `bench worker` does); rq and "
            "Celery the one queue holding the jobs. Celery: `--without-gossip --without-mingle "
            "--without-heartbeat -l WARNING`, acks_late, prefetch 1; rq: `-q`; bench: `--quiet`.",
            "",
        ]
        reps_note = {w: plan["drain_reps"].get(w, plan["reps"]) for w in plan.get("drain_reps", {})}
        if reps_note:
            lines += [
                "Fewer repetitions for the slow rq workers, to keep the run near 35 minutes: "
                + ", ".join(f"{w}: {r}" for w, r in reps_note.items())
                + ".",
                "",
            ]
        sizes = {**plan["drain_n"], **({"burst": plan["burst_n"]} if plan.get("burst_n") else {})}
        for workload, n in sizes.items():
            if not any(r.get("workload") == workload for r in drain):
                continue
            title = {"noop": "no-op (one INCR)", "sleep": "10 ms sleep + INCR"}.get(
                workload, "no-op jobs, a burst command"
            )
            lines += [f"### {n:,} {title} jobs", ""]
            if workload == "burst":
                lines += [
                    "A burst worker as a cron job or a CI step runs it: whole command = jobs / (spawn → exit).",
                    "",
                ]
            rows = []
            for w in WORKERS:
                sel = {"worker": w.name, "workload": workload}
                if not any(all(r.get(k) == v for k, v in sel.items()) for r in drain):
                    continue
                rows.append(
                    [w.name]
                    + [
                        cell(_pick(drain, k, **sel))
                        for k in (
                            "e2e_rate",
                            "whole_rate",
                            "steady_rate",
                            "spawn_to_first_s",
                            "last_to_exit_s",
                            "cpu_us_per_job",
                            "peak_rss_tree_mb",
                            "max_rss_process_mb",
                        )
                    ]
                )
            lines += _table(
                [
                    "worker",
                    "e2e jobs/s",
                    "whole command jobs/s",
                    "steady jobs/s",
                    "spawn→1st job s",
                    "last job→exit s",
                    "CPU µs/job",
                    "peak RSS tree MB",
                    "max RSS 1 proc MB",
                ],
                rows,
            )
            lines += [""]
    return lines


def _enqueue(data: dict[str, Any], plan: dict[str, Any]) -> list[str]:
    """Section 2: enqueue from one process."""
    lines: list[str] = []
    enq = _ok(data.get("enqueue", []))
    if data.get("enqueue"):
        size = next((r.get("message_bytes") for r in enq if r.get("message_bytes")), None)
        lines += [
            "## 2. Enqueue from one process",
            "",
            f"{plan['enqueue_n']:,} no-op jobs after 50 untimed warm-up jobs, a fresh interpreter per repetition, "
            f"an empty Redis each time. benchcelery's message is {size or '?'} bytes; the raw LPUSH pushes that "
            "many.",
            "",
        ]
        rows = [
            [label, cell(_pick(enq, "rate", method=mth)), cell(_pick(enq, "cpu_us_per_job", method=mth))]
            for mth, label in METHODS.items()
            if any(r.get("method") == mth for r in enq)
        ]
        lines += [*_table(["method", "jobs/s", "client CPU µs/job"], rows), ""]
    return lines


def _commands(data: dict[str, Any], plan: dict[str, Any]) -> list[str]:
    """Section 3: operator commands and cold start."""
    lines: list[str] = []
    cmds = _ok(data.get("commands", []))
    if data.get("commands"):
        backlogs = sorted({r["backlog"] for r in cmds if r.get("kind") == "operator"})
        lines += [
            "## 3. Operator commands (cold process, spawn to exit, seconds)",
            "",
            "benchcelery's backlog is spread evenly over 20 sites (`--site` names one of them); rq's is the same "
            "number of jobs in its `default` queue. `doctor` exits 1 here (jobs pending and no worker): timed "
            "anyway. One untimed warm-up run per command and backlog.",
            "",
        ]
        names = list(dict.fromkeys(r["command"] for r in cmds if r.get("kind") == "operator"))
        rows = [
            [name] + [cell(_pick(cmds, "seconds", kind="operator", command=name, backlog=b)) for b in backlogs]
            for name in names
        ]
        lines += [*_table(["command"] + [f"{b:,} pending" for b in backlogs], rows), ""]
        names = list(dict.fromkeys(r["command"] for r in cmds if r.get("kind") == "startup"))
        lines += [
            f"Cold start (each repetition: the median of {plan['startup_runs']} runs after one warm-up):",
            "",
        ]
        lines += [
            *_table(["command", "s"], [[n, cell(_pick(cmds, "seconds", kind="startup", command=n))] for n in names]),
            "",
        ]
    return lines


def _memory(data: dict[str, Any], plan: dict[str, Any]) -> list[str]:
    """Section 4: idle memory."""
    lines: list[str] = []
    mem = _ok(data.get("memory", []))
    if data.get("memory"):
        lines += [
            "## 4. Idle memory of one worker process tree (MB)",
            "",
            f"Each worker ran one no-op job (that is how readiness is seen), then idled {plan['idle_settle']:.0f} s "
            "before the reading. PSS/USS from /proc/<pid>/smaps_rollup. (rq's SimpleWorker is the same idle "
            "process as its forking worker.)",
            "",
        ]
        rows = []
        for w in WORKERS:
            if not any(r["worker"] == w.name for r in mem):
                continue
            rows.append(
                [w.name]
                + [
                    cell(_pick(mem, k, worker=w.name))
                    for k in ("procs", "rss_main_mb", "rss_tree_mb", "pss_tree_mb", "uss_tree_mb", "ready_s")
                ]
            )
        lines += _table(["worker", "procs", "RSS main", "RSS tree", "PSS tree", "USS tree", "ready after s"], rows)
        lines += [""]
    return lines


def _scheduler(data: dict[str, Any], plan: dict[str, Any]) -> list[str]:
    """Section 5: scheduler ticks."""
    lines: list[str] = []
    sched = _ok(data.get("scheduler", []))
    if data.get("scheduler"):
        lines += [
            f"## 5. Scheduler ticks: 500 sites {TIMES} 20 scheduled jobs",
            "",
            "`make_scheduler(rt).run_tick()` in a fresh interpreter on an empty Redis: the first tick reconciles "
            "(writes every RedBeat entry), then idle ticks (nothing due; per repetition their median), then one "
            "tick with the clock 400 days ahead so every entry is due (each fires `enqueue` with deduplication), "
            "then an idle tick again.",
            "",
        ]
        if sched:
            rows = [
                ["RedBeat entries", cell(summary(r["entries"] for r in sched))],
                ["first tick (reconcile all entries) s", cell(summary(r["first"]["seconds"] for r in sched))],
                ["tick, nothing due s", cell(summary(sched_idle(r) for r in sched))],
                ["tick, everything due s", cell(summary(r["all_due"]["seconds"] for r in sched))],
                ["  jobs fired by it", cell(summary(r["all_due"]["fired"] for r in sched))],
                [
                    "  per fired job ms",
                    cell(summary(r["all_due"]["seconds"] / max(1, r["all_due"]["fired"]) * 1000 for r in sched)),
                ],
                ["tick after it, nothing due s", cell(summary(r["idle_after_due"]["seconds"] for r in sched))],
            ]
            lines += [*_table(["", "value"], rows), ""]
    return lines


def _footer(data: dict[str, Any], plan: dict[str, Any]) -> list[str]:
    """Failures, if any, and where the raw data is."""
    lines: list[str] = []
    errors = [
        r for k in ("drain", "enqueue", "commands", "memory", "scheduler") for r in data.get(k, []) if "error" in r
    ]
    if errors:
        lines += ["## Failures", ""] + [f"- {json.dumps(r)}" for r in errors] + [""]
    lines += [
        "Raw data: `results.json` (every repetition)."
        if not plan["quick"]
        else "Raw data: `results-quick.json` (every repetition).",
        "",
    ]
    return lines


def write(data: dict[str, Any], out_dir: Path, stem: str) -> tuple[Path, Path]:
    md = out_dir / f"{stem.upper()}.md" if stem == "results" else out_dir / "RESULTS-quick.md"
    out_dir.mkdir(parents=True, exist_ok=True)
    js = out_dir / f"{stem}.json"
    js.write_text(json.dumps(data, indent=1, default=str) + "\n")
    text = render(data)
    if md.exists():  # keep sections other scripts maintain (redis_cost.py's, between its markers)
        from benchmarks.redis_cost import END, START

        old = md.read_text()
        if START in old and END in old:
            text = text.rstrip("\n") + "\n\n" + START + old.split(START, 1)[1].split(END, 1)[0] + END + "\n"
    md.write_text(text)
    return md, js
