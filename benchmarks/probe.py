"""Work that runs inside a fresh interpreter (one per measurement), so imports, clients and
connections of one system never help or hinder another. Prints one JSON object on stdout.

    python -m benchmarks.probe fill SYSTEM WORKLOAD N [--sites K]
    python -m benchmarks.probe enqueue METHOD N [--payload BYTES]
    python -m benchmarks.probe schedule

Environment: BENCHMARK_REDIS_URL, BENCHMARK_BENCH, BENCHMARK_SCHED_BENCH (set by env.Env).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from benchmarks import apps

WARMUP = 50
RQ_BATCH = 1000


def _site(i: int) -> str:
    from benchmarks.env import site_name

    return site_name(i)


def _redis() -> Any:
    import redis

    return redis.Redis.from_url(os.environ[apps.URL_ENV])


# --- filling queues (not timed by the harness; as fast as each system allows) ---


def fill(system: str, workload: str, n: int, sites: int) -> dict[str, Any]:
    method = apps.JOBS[system][workload]
    started = time.perf_counter()
    if system == "bench":
        import benchcelery

        per_site = [n // sites + (1 if i < n % sites else 0) for i in range(sites)]
        for i, count in enumerate(per_site):
            benchcelery.init(site=_site(i), bench_path=os.environ["BENCHMARK_BENCH"])
            for start in range(0, count, 5000):
                benchcelery.enqueue_many([{"method": method}] * min(5000, count - start))
    elif system == "rq":
        from rq import Queue

        q = Queue(apps.QUEUE, connection=_redis())
        for start in range(0, n, RQ_BATCH):
            with q.connection.pipeline() as pipe:
                q.enqueue_many([Queue.prepare_data(method) for _ in range(min(RQ_BATCH, n - start))], pipeline=pipe)
                pipe.execute()
    elif system == "celery":
        import peer_celery  # type: ignore[import-not-found]

        app = peer_celery.app
        task = app.tasks[method]
        with app.producer_or_acquire() as producer, producer.batch(max_size=1000):
            for _ in range(n):
                task.apply_async(producer=producer)
    else:
        raise SystemExit(f"unknown system {system}")
    return {"seconds": time.perf_counter() - started}


# --- enqueue from one process ---


def _bench_setup() -> tuple[Any, Any]:
    import benchcelery

    rt = benchcelery.init(site=_site(0), bench_path=os.environ["BENCHMARK_BENCH"])
    return benchcelery, rt


Call = Callable[[int], None]  # enqueue k jobs
After = Callable[[], dict[str, Any]]  # extra figures read once the timed part is over


def _no_extra() -> dict[str, Any]:
    return {}


def _bench_enqueue(_payload: int) -> tuple[Call, After]:
    bc, rt = _bench_setup()
    name = apps.JOBS["bench"]["noop"]

    def call(k: int) -> None:
        for _ in range(k):
            bc.enqueue(name)

    def after() -> dict[str, Any]:
        from benchcelery.jobs.inspect import waiting_lists

        lists = waiting_lists(rt.redis, rt.keys, apps.QUEUE)  # the site's lists (and kombu's)
        message = next((m for m in (rt.redis.lindex(k, 0) for k in lists) if m), b"")
        return {"message_bytes": len(message)}

    return call, after


def _bench_enqueue_many(_payload: int) -> tuple[Call, After]:
    bc, _rt = _bench_setup()
    name = apps.JOBS["bench"]["noop"]

    def call(k: int) -> None:
        bc.enqueue_many([{"method": name}] * k)

    return call, _no_extra


def _rq_enqueue(_payload: int) -> tuple[Call, After]:
    from rq import Queue

    q = Queue(apps.QUEUE, connection=_redis())

    def call(k: int) -> None:
        for _ in range(k):
            q.enqueue(apps.JOBS["rq"]["noop"])

    return call, _no_extra


def _rq_enqueue_many(_payload: int) -> tuple[Call, After]:
    from rq import Queue

    q = Queue(apps.QUEUE, connection=_redis())

    def call(k: int) -> None:
        for start in range(0, k, RQ_BATCH):
            with q.connection.pipeline() as pipe:
                datas = [Queue.prepare_data(apps.JOBS["rq"]["noop"]) for _ in range(min(RQ_BATCH, k - start))]
                q.enqueue_many(datas, pipeline=pipe)
                pipe.execute()

    return call, _no_extra


def _celery_apply_async(_payload: int) -> tuple[Call, After]:
    import peer_celery

    task = peer_celery.app.tasks[apps.JOBS["celery"]["noop"]]

    def call(k: int) -> None:
        for _ in range(k):
            task.apply_async()

    return call, _no_extra


def _lpush(payload: int) -> tuple[Call, After]:
    r = _redis()
    body = b"x" * payload

    def call(k: int) -> None:
        for _ in range(k):
            r.lpush("benchmark:lpush", body)

    return call, lambda: {"payload_bytes": payload}


ENQUEUE_METHODS: dict[str, Callable[[int], tuple[Call, After]]] = {
    "bench_enqueue": _bench_enqueue,
    "bench_enqueue_many": _bench_enqueue_many,
    "rq_enqueue": _rq_enqueue,
    "rq_enqueue_many": _rq_enqueue_many,
    "celery_apply_async": _celery_apply_async,
    "lpush": _lpush,
}


def enqueue(method: str, n: int, payload: int) -> dict[str, Any]:
    make = ENQUEUE_METHODS.get(method)
    if make is None:
        raise SystemExit(f"unknown method {method}")
    call, after = make(payload)
    call(WARMUP)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    call(n)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return {"n": n, "seconds": wall, "rate": n / wall, "cpu_us_per_job": cpu / n * 1e6, **after()}


# --- scheduler ---


def schedule(idle_ticks: int) -> dict[str, Any]:
    import benchcelery
    from benchcelery.scheduler.beat import make_scheduler

    rt = benchcelery.init(bench_path=os.environ["BENCHMARK_SCHED_BENCH"])
    scheduler = make_scheduler(rt)
    first = scheduler.run_tick()
    entries = int(rt.redis.zcard(rt.keys.redbeat_schedule))
    idle = [scheduler.run_tick() for _ in range(idle_ticks)]
    # Jump 400 days ahead: every entry (yearly ones too) is due in the next tick.
    future = datetime.now(UTC) + timedelta(days=400)
    scheduler.app.now = lambda: future
    due = scheduler.run_tick()
    idle_after = scheduler.run_tick()

    def fmt(s: Any) -> dict[str, Any]:
        return {k: getattr(s, k) for k in ("seconds", "due", "fired", "skipped_inactive", "skipped_running", "errors")}

    return {
        "entries": entries,
        "sites": len(rt.bench.sites()),
        "first": {**fmt(first), "reconciled": first.reconciled},
        "idle": [fmt(s) for s in idle],
        "all_due": fmt(due),
        "idle_after_due": fmt(idle_after),
    }


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.probe")
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("fill")
    p.add_argument("system")
    p.add_argument("workload")
    p.add_argument("n", type=int)
    p.add_argument("--sites", type=int, default=1)
    p = sub.add_parser("enqueue")
    p.add_argument("method")
    p.add_argument("n", type=int)
    p.add_argument("--payload", type=int, default=1000)
    p = sub.add_parser("schedule")
    p.add_argument("--idle-ticks", type=int, default=5)
    args = parser.parse_args(argv)
    if args.what == "fill":
        out = fill(args.system, args.workload, args.n, args.sites)
    elif args.what == "enqueue":
        out = enqueue(args.method, args.n, args.payload)
    else:
        out = schedule(args.idle_ticks)
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1:])
