"""``python -m benchmarks.ab OTHER_CHECKOUT [--reps 3]``: this checkout against another, interleaved.

Runs ``python -m benchmarks run --quick --reps 1`` in each checkout in turn (A, B, A, B, ...), each
with its own virtual environment (``<checkout>/.venv``), so both see the same machine noise; then
prints, per figure, the median of each side and B / A. A is OTHER_CHECKOUT (e.g. a worktree of an
earlier commit: ``git worktree add /tmp/before <commit>``), B is this one. Raw results stay in
``--out`` (one JSON file per run) for a second look.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent.parent
WORKERS = "bench worker,bench worker-pool 2,celery solo"

Figure = tuple[str, Callable[[dict[str, Any]], float | None], bool]  # name, read, higher is better


def _drain(worker: str, workload: str, field: str) -> Callable[[dict[str, Any]], float | None]:
    def read(d: dict[str, Any]) -> float | None:
        rows = [r[field] for r in d.get("drain", []) if r["worker"] == worker and r["workload"] == workload]
        return statistics.median(rows) if rows else None

    return read


def _cpu_vs_solo(d: dict[str, Any]) -> float | None:
    ours, solo = _drain("bench worker", "noop", "cpu_us_per_job")(d), _drain("celery solo", "noop", "cpu_us_per_job")(d)
    return ours / solo if ours and solo else None


def _enqueue(method: str) -> Callable[[dict[str, Any]], float | None]:
    def read(d: dict[str, Any]) -> float | None:
        rows = [r["rate"] for r in d.get("enqueue", []) if r["method"] == method]
        return statistics.median(rows) if rows else None

    return read


def _command(name: str) -> Callable[[dict[str, Any]], float | None]:
    def read(d: dict[str, Any]) -> float | None:
        rows = [r["seconds"] for r in d.get("commands", []) if r["command"] == name and r.get("backlog", 0) == 0]
        return statistics.median(rows) if rows else None

    return read


def _rss(worker: str) -> Callable[[dict[str, Any]], float | None]:
    def read(d: dict[str, Any]) -> float | None:
        rows = [r["rss_tree_mb"] for r in d.get("memory", []) if r["worker"] == worker]
        return statistics.median(rows) if rows else None

    return read


def _sched_first(d: dict[str, Any]) -> float | None:
    rows = [r["first"]["seconds"] for r in d.get("scheduler", [])]
    return statistics.median(rows) if rows else None


FIGURES: list[Figure] = [
    ("drain, bench worker, jobs/s", _drain("bench worker", "noop", "e2e_rate"), True),
    ("drain, bench worker-pool 2, jobs/s", _drain("bench worker-pool 2", "noop", "e2e_rate"), True),
    ("CPU per job, bench worker, µs", _drain("bench worker", "noop", "cpu_us_per_job"), False),
    ("CPU per job, bench worker / celery solo", _cpu_vs_solo, False),
    ("--burst spawn → first job, s", _drain("bench worker", "burst", "spawn_to_first_s"), False),
    ("--burst last job → exit, s", _drain("bench worker", "burst", "last_to_exit_s"), False),
    ("single enqueue, jobs/s", _enqueue("bench_enqueue"), True),
    ("bulk enqueue, jobs/s", _enqueue("bench_enqueue_many"), True),
    ("bench show-pending-jobs, s", _command("bench show-pending-jobs"), False),
    ("bench doctor --no-db, s", _command("bench doctor --no-db"), False),
    ("bench --help, s", _command("bench --help"), False),
    ("idle RSS, bench worker (tree), MB", _rss("bench worker"), False),
    ("scheduler first tick, 10,000 entries, s", _sched_first, False),
]


def compile_tree(checkout: Path) -> None:
    """Write the bytecode of the checkout's sources first: with PYTHONDONTWRITEBYTECODE set (as on
    some machines) a tree without it compiles every module at every start, and the start-up figures
    then measure which side happened to have more .pyc files, not the code."""
    python = str(checkout / ".venv/bin/python")
    subprocess.run([python, "-m", "compileall", "-q", "benchcelery", "benchmarks"], cwd=checkout, check=True)


def run_once(checkout: Path, out: Path, workers: str) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    cmd = [str(checkout / ".venv/bin/python"), "-m", "benchmarks", "run", "--quick", "--reps", "1"]
    cmd += ["--workers", workers, "--output-dir", str(out)]
    subprocess.run(cmd, cwd=checkout, check=True)
    return json.loads((out / "results-quick.json").read_text())


def compare(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for name, read, higher in FIGURES:
        va = [v for v in map(read, a) if v is not None]
        vb = [v for v in map(read, b) if v is not None]
        if not va or not vb:
            continue
        ma, mb = statistics.median(va), statistics.median(vb)
        ratio = mb / ma if ma else float("nan")
        worse = ratio < 0.9 if higher else ratio > 1.1
        rows.append([name, f"{ma:,.3g}", f"{mb:,.3g}", f"{ratio:.2f}", "worse > 10 %" if worse else ""])
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.ab", description=__doc__.splitlines()[0])
    p.add_argument("other", type=Path, help="the checkout to compare against (A), with its own .venv")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--workers", default=WORKERS)
    p.add_argument("--out", type=Path, default=Path("/tmp/benchcelery-ab"))
    args = p.parse_args(argv)
    results: dict[str, list[dict[str, Any]]] = {"a": [], "b": []}
    for checkout in (args.other.resolve(), HERE):
        compile_tree(checkout)
    for rep in range(args.reps):
        for side, checkout in (("a", args.other.resolve()), ("b", HERE)):
            print(f"ab: repetition {rep + 1}/{args.reps}, {side.upper()} = {checkout}", file=sys.stderr, flush=True)
            data = run_once(checkout, args.out / f"{side}{rep}", args.workers)
            results[side].append(data)
    print(f"| figure | A {args.other} | B {HERE.name} | B / A | |")
    print("|---|---|---|---|---|")
    for row in compare(results["a"], results["b"]):
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
