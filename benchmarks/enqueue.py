"""Measurement 2: enqueue from one process (a fresh interpreter per repetition, 50 warm-up jobs
not timed). The raw LPUSH pushes a payload as long as benchcelery's message for the same job."""

from __future__ import annotations

from typing import Any

from benchmarks.common import Plan, probe, say
from benchmarks.env import Env

METHODS: dict[str, str] = {
    "bench_enqueue": "benchcelery.enqueue",
    "bench_enqueue_many": "benchcelery.enqueue_many",
    "rq_enqueue": "rq Queue.enqueue",
    "rq_enqueue_many": "rq Queue.enqueue_many (pipelines of 1,000)",
    "celery_apply_async": "plain Celery apply_async",
    "lpush": "raw redis-py LPUSH (same-size payload)",
}
DEFAULT_PAYLOAD = 1000


def run(env: Env, plan: Plan) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    payload = DEFAULT_PAYLOAD
    n = plan.enqueue_n
    for rep in range(plan.reps):
        for method, label in METHODS.items():
            env.flush()
            say(f"enqueue x{n}: {label} (rep {rep + 1}/{plan.reps})")
            try:
                res = probe(env, ["enqueue", method, str(n), "--payload", str(payload)], timeout=60 + n / 20)
            except Exception as exc:
                say(f"  FAILED: {exc}")
                results.append({"method": method, "rep": rep, "error": str(exc)})
                continue
            payload = int(res.get("message_bytes") or payload)
            say(f"  {res['rate']:.0f} jobs/s, {res['cpu_us_per_job']:.0f} client CPU us/job")
            results.append({"method": method, "label": label, "rep": rep, **res})
    env.flush()
    return results
