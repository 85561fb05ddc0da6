"""``python -m benchmarks run [--quick] [--only NAME,...]``: benchcelery vs rq vs plain Celery.

``python -m benchmarks faults [--quick]``: the fault suite (benchmarks/faults/, RELIABILITY.md).

``python -m benchmarks field [--quick]``: against huey, taskiq, saq, dramatiq, arq, Celery and rq
(benchmarks/field.py, FIELD.md); ``run --only field`` does the same.

Starts a private Redis on a free port, builds a bench (and a 500-site bench for the scheduler) in
a temporary directory, runs the measurements of issue 7 interleaved across systems and writes
``benchmarks/RESULTS.md`` + ``benchmarks/results.json`` (a ``--quick`` run writes
``RESULTS-quick.md`` / ``results-quick.json`` instead, so it never replaces the real results).
Installs nothing; needs the project's ``bench`` extra (rq, psutil).
"""

from __future__ import annotations

import argparse
import atexit
import signal
import sys
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

MEASUREMENTS = ("drain", "enqueue", "commands", "memory", "scheduler")
OUT_DIR = Path(__file__).resolve().parent


def _on_signal(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run(args: argparse.Namespace) -> int:
    from benchmarks import (
        commands,
        common,
        drain,
        enqueue,
        env,
        machine,
        memory,
        procs,
        report,
        scheduler,
        tables,
        targets,
        workers,
    )

    only = [x.strip() for x in args.only.split(",")] if args.only else list(MEASUREMENTS)
    unknown = set(only) - set(MEASUREMENTS)
    if unknown:
        print(
            f"unknown measurement(s): {', '.join(sorted(unknown))}; choose from {', '.join(MEASUREMENTS)}",
            file=sys.stderr,
        )
        return 2
    plan = common.plan(args.quick, args.reps)
    chosen = [w.strip() for w in args.workers.split(",")] if args.workers else None
    signal.signal(signal.SIGTERM, _on_signal)
    atexit.register(procs.kill_all)
    started = time.time()
    common.say(f"benchmarks: {'quick' if plan.quick else 'full'} run of {', '.join(only)}; setting up")
    world = env.create(keep=args.keep)
    data: dict[str, Any] = {}
    try:
        common.say(f"Redis {world.url} ({world.redis_binary}); benches in {world.workdir}")
        data["meta"] = {
            "started": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "plan": asdict(plan),
            "only": only if args.only else None,
            "machine": machine.describe(world.redis, world.redis_binary),
        }
        selected = workers.by_name(chosen)
        for name in only:
            common.say(f"=== {name} ===")
            if name == "drain":
                data["drain"] = drain.run(world, plan, selected)
            elif name == "enqueue":
                data["enqueue"] = enqueue.run(world, plan)
            elif name == "commands":
                data["commands"] = commands.run(world, plan)
            elif name == "memory":
                data["memory"] = memory.run(world, plan, selected)
            elif name == "scheduler":
                data["scheduler"] = scheduler.run(world, plan)
    except KeyboardInterrupt:
        common.say("interrupted: stopping every worker and Redis; no results written")
        return 130
    finally:
        procs.kill_all()
        world.close()
        if args.keep:
            common.say(f"kept {world.workdir}")
    data["meta"]["duration_s"] = time.time() - started
    stem = "results-quick" if plan.quick or args.only or args.workers else "results"
    md, js = report.write(data, Path(args.output_dir), stem)
    common.say(f"wrote {md} and {js}")
    for target in targets.targets(data):
        verdict = "-" if target.value is None else ("PASS" if target.check(target.value) else "MISS")
        common.say(f"  {verdict:4}  {target.name}: {tables.num(target.value)} (target {target.target})")
    return 0


def _only_field(argv: list[str]) -> bool:
    """``run --only field`` (or ``--only=field``) is the field comparison on its own."""
    return any(a == "--only=field" or (a == "--only" and argv[i + 1 : i + 2] == ["field"]) for i, a in enumerate(argv))


def _without_only(argv: list[str]) -> list[str]:
    out: list[str] = []
    skip = False
    for a in argv:
        if skip or a == "--only=field":
            skip = False
            continue
        if a == "--only":
            skip = True
            continue
        out.append(a)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="run the benchmarks and write RESULTS.md + results.json")
    p.add_argument("--quick", action="store_true", help="small sizes, one repetition (~5 min); writes *-quick files")
    p.add_argument("--only", help=f"comma-separated subset of: {', '.join(MEASUREMENTS)}")
    p.add_argument("--workers", help="comma-separated worker names (drain, memory), e.g. 'bench worker,celery solo'")
    p.add_argument("--reps", type=int, help="repetitions (default 3; --quick 1)")
    p.add_argument("--output-dir", default=str(OUT_DIR), help="where to write the results (default: benchmarks/)")
    p.add_argument("--keep", action="store_true", help="keep the temporary benches and worker logs")
    sub.add_parser("field", help="against huey, taskiq, saq, dramatiq, arq (see field --help)", add_help=False)
    sub.add_parser("faults", help="run the fault suite and write RELIABILITY.md (see faults --help)", add_help=False)
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["run"] and _only_field(argv):
        argv = ["field", *_without_only(argv[1:])]
    if argv[:1] == ["field"]:
        from benchmarks import field

        return field.main(argv[1:])
    if argv[:1] == ["faults"]:
        from benchmarks import faults

        return faults.main(argv[1:])
    args = parser.parse_args(argv)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
