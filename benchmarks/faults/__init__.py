"""``python -m benchmarks faults [--quick] [--only NAME,...]``: the fault suite.

Runs real ``bench worker`` / ``bench worker-pool`` processes against a private Redis (the
*broker*, restarted with the options each scenario needs) and kills, pauses, stops and poisons
them. Every job of the suite's app does, on a second private Redis that no fault ever touches (the
*counter*), ``HINCRBY starts <n>`` when it starts and ``INCR count`` + ``SADD ran <n>`` +
``HINCRBY runs <n>`` when it ends, so lost and doubled runs are counted exactly: a job is *lost*
when it never ran to its end and has no failed record; it *ran twice* when ``runs[n] >= 2``.
Writes ``benchmarks/RELIABILITY.md`` (+ ``reliability.json``); see ``--help`` for the sizes.

The package: ``world`` (the two Redis servers, the bench and its job app), ``state`` (reading
queues, runs and failed records; the lost / ran-twice tally), ``scenarios/`` (one module per
group of faults), ``plan`` (scenario names and sizes), ``runner`` (runs them in turn) and
``report`` (RELIABILITY.md).
"""

from __future__ import annotations

import sys
from pathlib import Path

from benchmarks.faults.plan import SCENARIOS


def main(argv: list[str]) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m benchmarks faults", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smaller sizes (~6 min instead of ~13)")
    p.add_argument("--only", help=f"comma-separated subset of: {', '.join(SCENARIOS)}")
    p.add_argument("--jobs", type=int, help="jobs of the SIGKILL soak (default 3000; --quick 600)")
    p.add_argument("--kill-every", type=float, help="seconds between SIGKILLs of the soak (default 2)")
    p.add_argument("--output", default=str(Path(__file__).resolve().parents[1] / "RELIABILITY.md"))
    p.add_argument("--keep", action="store_true", help="keep the work directory (worker logs)")
    p.add_argument("--update", action="store_true", help="replace only these scenarios' results in the report")
    args = p.parse_args(argv)
    only = [x.strip() for x in args.only.split(",")] if args.only else list(SCENARIOS)
    unknown = set(only) - set(SCENARIOS)
    if unknown:
        print(f"unknown scenario(s): {', '.join(sorted(unknown))}; choose from {', '.join(SCENARIOS)}", file=sys.stderr)
        return 2
    from benchmarks.faults.runner import run

    return run(args.quick, only, args.jobs, args.kill_every, Path(args.output), args.keep, args.update)
