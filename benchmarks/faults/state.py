"""Reading the world's state: queued messages, runs counted on the counter Redis, failed-job
records, and the tally of lost and doubled runs; plus enqueueing and waiting with a deadline."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterable
from typing import Any

import redis

from benchcelery.bench.keys import UNKNOWN_SITE
from benchcelery.jobs.inspect import waiting_lists
from benchmarks.faults.world import QUEUE, RUN, SITE, World


def wait_until(pred: Callable[[], bool], timeout: float, interval: float = 0.05) -> float | None:
    """Seconds until ``pred()`` held, or None after ``timeout`` (errors count as 'not yet')."""
    start = time.monotonic()
    while True:
        try:
            if pred():
                return time.monotonic() - start
        except redis.RedisError:
            pass
        if time.monotonic() - start > timeout:
            return None
        time.sleep(interval)


def msg_n(raw: bytes | str) -> Any:
    """The ``n`` keyword argument of a queued message (None if it has none or is no message)."""
    try:
        msg = json.loads(raw)
        body = msg["body"]
        if msg["properties"].get("body_encoding") == "base64":
            body = base64.b64decode(body)
        return json.loads(body)[1].get("n")
    except Exception:
        return None


def waiting(w: World) -> list[bytes]:
    out: list[bytes] = []
    for q in ("short", QUEUE, "long"):
        for key in waiting_lists(w.b, w.keys, q):  # each site's lists and kombu's
            out += w.b.lrange(key, 0, -1)
    return out


def idle(w: World) -> bool:
    """Nothing waiting in a queue and nothing in flight."""
    return not waiting(w) and w.b.hlen(w.keys.inflight) == 0


def failed(w: World) -> list[dict[str, Any]]:
    out = []
    for key in w.b.scan_iter(f"{w.keys.prefix}failed:*:data"):
        out += [json.loads(v) for v in w.b.hvals(key)]
    return out


def recorded_ns(w: World) -> set[int]:
    ns = set()
    for rec in failed(w):
        kwargs = rec.get("kwargs")
        if isinstance(kwargs, dict) and isinstance(kwargs.get("n"), int):
            ns.add(kwargs["n"])
    return ns


def runs(w: World) -> dict[int, int]:
    return {int(k): int(v) for k, v in w.c.hgetall("runs").items()}


def starts(w: World, n: int) -> int:
    return int(w.c.hget("starts", n) or 0)


def tally(w: World, ids: Iterable[int]) -> dict[str, Any]:
    ids = list(ids)
    done = runs(w)
    rec = recorded_ns(w)
    lost = sorted(n for n in ids if not done.get(n) and n not in rec)
    twice = sorted(n for n in ids if done.get(n, 0) >= 2)
    return {
        "jobs": len(ids),
        "lost": len(lost),
        "lost_ids": lost,
        "ran_twice": len(twice),
        "ran_twice_ids": twice,
        "recorded": len(rec & set(ids)),
        "stale_acks": int(w.b.get(w.keys.stale_acks) or 0),
        "recovered": sum(int(v) for v in w.b.hvals(w.keys.recovered(QUEUE))),
    }


def enqueue(w: World, ns: Iterable[int], ms: int = 5, site: str = SITE, method: str = RUN) -> None:
    """Enqueue ``method(n=n, ms=ms)`` for every n (enqueue_many, in this process)."""
    import benchcelery

    benchcelery.init(site=site, bench_path=w.bench.root)
    items = [{"method": method, "kwargs": {"n": n, "ms": ms}} for n in ns]
    for i in range(0, len(items), 1000):
        benchcelery.enqueue_many(items[i : i + 1000])


def settle(w: World, ids: list[int], timeout: float) -> float | None:
    """Wait until every job ran or is recorded and nothing waits or is in flight."""

    def done() -> bool:
        if not idle(w):
            return False
        finished = set(runs(w)) | recorded_ns(w)
        return all(n in finished for n in ids)

    return wait_until(done, timeout, 0.2)


def rec_n(rec: dict[str, Any]) -> Any:
    kwargs = rec.get("kwargs")
    return kwargs.get("n") if isinstance(kwargs, dict) else None


def msg_site(raw: str) -> str:
    try:
        return str(json.loads(raw)["headers"]["site"])
    except Exception:
        return UNKNOWN_SITE
