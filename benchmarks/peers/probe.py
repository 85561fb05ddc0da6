"""The field comparison's work in a fresh interpreter; prints one JSON object.

    python -m benchmarks.peers.probe fill METHOD N
    python -m benchmarks.peers.probe enqueue METHOD N
    python -m benchmarks.peers.probe latency METHOD N [--budget SECONDS]

METHOD is ``module:function`` of a peer module (the function returns ``call(k)``, enqueueing k
no-op jobs), ``bench``/``celery``/``rq`` for ``fill`` (the harness's own fill), or a method of
``benchmarks.probe`` (``bench_enqueue``, ``rq_enqueue_many``...), or ``celery_group``.

``latency``: with an idle worker already running, enqueue one job at a time and time it until the
job's INCR reaches Redis, seen as a keyspace notification on the counter (the harness turns them
on for this measurement only); 10 to 40 ms pauses between jobs let the worker go back to waiting.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import random
import statistics
import sys
import time
from typing import Any

from benchmarks import apps
from benchmarks import probe as base
from benchmarks.peers._job import Call

PAYLOAD = 1000  # the raw LPUSH method's payload; the other methods ignore it


def _celery_group() -> Call:
    import celery
    import peer_celery  # type: ignore[import-not-found]

    task = peer_celery.app.tasks[apps.JOBS["celery"]["noop"]]

    def call(k: int) -> None:
        for start in range(0, k, 1000):
            celery.group(task.s() for _ in range(min(1000, k - start))).apply_async()

    return call


def make(method: str) -> Call:
    if ":" in method:
        module, func = method.split(":", 1)
        return importlib.import_module(module).__dict__[func]()  # type: ignore[no-any-return]
    if method == "celery_group":
        return _celery_group()
    call, _after = base.ENQUEUE_METHODS[method](PAYLOAD)
    return call


def fill(method: str, n: int) -> dict[str, Any]:
    if method in ("bench", "celery", "rq"):
        return base.fill(method, "noop", n, 1)
    started = time.perf_counter()
    make(method)(n)
    return {"seconds": time.perf_counter() - started}


def enqueue(method: str, n: int) -> dict[str, Any]:
    call = make(method)
    call(base.WARMUP)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    call(n)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return {"n": n, "seconds": wall, "rate": n / wall, "cpu_us_per_job": cpu / n * 1e6}


def latency(method: str, n: int, budget: float) -> dict[str, Any]:
    import redis

    r = redis.Redis.from_url(os.environ[apps.URL_ENV])
    pubsub = r.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(f"__keyspace@0__:{apps.COUNTER}")
    call = make(method)
    while pubsub.get_message(timeout=0.1) is not None:
        pass
    samples: list[float] = []
    deadline = time.monotonic() + budget
    while len(samples) < n and time.monotonic() < deadline:
        time.sleep(random.uniform(0.01, 0.04))
        while pubsub.get_message(timeout=0) is not None:
            pass
        t0 = time.perf_counter()
        call(1)
        while True:
            msg = pubsub.get_message(timeout=10)
            if msg is None:
                raise SystemExit("no job ran within 10 s of its enqueue")
            if msg.get("type") == "message":
                break
        samples.append((time.perf_counter() - t0) * 1000)
    samples.sort()
    p99 = samples[min(len(samples) - 1, round(0.99 * (len(samples) - 1)))]
    return {"n": len(samples), "median_ms": statistics.median(samples), "p99_ms": p99, "max_ms": samples[-1]}


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.peers.probe")
    parser.add_argument("what", choices=("fill", "enqueue", "latency"))
    parser.add_argument("method")
    parser.add_argument("n", type=int)
    parser.add_argument("--budget", type=float, default=30.0, help="latency: stop sampling after this many seconds")
    args = parser.parse_args(argv)
    if args.what == "fill":
        out = fill(args.method, args.n)
    elif args.what == "enqueue":
        out = enqueue(args.method, args.n)
    else:
        out = latency(args.method, args.n, args.budget)
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1:])
