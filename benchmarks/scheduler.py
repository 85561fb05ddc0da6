"""Measurement 5: scheduler ticks with 500 sites x 20 scheduled jobs (10,000 RedBeat entries).

Each repetition starts from an empty Redis in a fresh interpreter: the first tick reconciles
(writes every entry), then ticks with nothing due, then one tick with the clock moved 400 days
ahead so every entry is due (10,000 enqueues with deduplication), then one idle tick again.
"""

from __future__ import annotations

from typing import Any

from benchmarks.common import Plan, probe, say
from benchmarks.env import Env


def run(env: Env, plan: Plan) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    for rep in range(plan.reps):
        env.flush()
        say(f"scheduler: 500 sites x 20 jobs, reconcile + idle ticks + an all-due tick (rep {rep + 1}/{plan.reps})")
        try:
            res = probe(env, ["schedule", "--idle-ticks", str(plan.sched_idle_ticks)], timeout=600)
        except Exception as exc:
            say(f"  FAILED: {exc}")
            results.append({"rep": rep, "error": str(exc)})
            continue
        idle = min(t["seconds"] for t in res["idle"])
        say(
            f"  {res['entries']} entries: first tick (reconcile) {res['first']['seconds']:.3f} s, "
            f"idle tick {idle * 1000:.1f} ms, all-due tick {res['all_due']['seconds']:.2f} s "
            f"({res['all_due']['fired']} fired)"
        )
        results.append({"rep": rep, **res})
    env.flush()
    return results
