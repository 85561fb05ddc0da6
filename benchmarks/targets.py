"""The performance targets of issues 7 and 13 (#13), as ratios of the measured medians: each
``Target`` says what was measured, the bound it must meet and on what basis."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from benchmarks.common import Summary, summary
from benchmarks.tables import DASH, TIMES, cell, num, ok, pick, sched_idle


@dataclass
class Target:
    name: str
    value: float | None
    target: str
    check: Callable[[float], bool]
    basis: str

    @property
    def verdict(self) -> str:
        return "-" if self.value is None else ("PASS" if self.check(self.value) else "MISS")

    def row(self) -> list[str]:
        verdict = DASH if self.value is None else f"**{self.verdict}**"
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


def targets(data: dict[str, Any]) -> list[Target]:
    drain = ok(data.get("drain", []))
    enq = ok(data.get("enqueue", []))
    cmds = ok(data.get("commands", []))
    mem = ok(data.get("memory", []))
    sched = ok(data.get("scheduler", []))

    def d(worker: str, key: str = "e2e_rate") -> Summary | None:
        return pick(drain, key, worker=worker, workload="noop")

    def e(method: str) -> Summary | None:
        return pick(enq, "rate", method=method)

    def c(command: str, backlog: int) -> Summary | None:
        return pick(cmds, "seconds", kind="operator", command=command, backlog=backlog)

    def cold(command: str) -> Summary | None:
        return pick(cmds, "seconds", kind="startup", command=command)

    def burst(worker: str) -> Summary | None:
        return pick(drain, "whole_rate", worker=worker, workload="burst")

    def m(worker: str) -> Summary | None:
        return pick(mem, "rss_tree_mb", worker=worker)

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
