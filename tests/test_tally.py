"""Success-path job metrics summed in the worker and written once a second (jobs/tally.py): the sums
equal the per-job commands, a real worker sends a handful of metric commands instead of ~8 per
job, and what a worker summed is written when it goes idle and when it stops."""

from __future__ import annotations

import signal
import time
from typing import Any

import pytest

from benchcelery.diagnostics import history as read
from benchcelery.jobs import history
from benchcelery.jobs.tally import Tally
from tests.conftest import BenchHandle, pending_total, wait_until


def test_the_tally_sums_increments_and_keeps_the_last_of_everything_else() -> None:
    now = [100.0]
    tally = Tally(every=1.0, clock=lambda: now[0])
    assert not tally.due() and tally.stale_in(1.25) is None and Tally().drain() == []
    assert tally.add([("HINCRBY", "d", "m\x1f0", 1), ("HINCRBYFLOAT", "d", "m\x1fsum", "0.25"), ("EXPIRE", "d", 60)])
    assert tally.due()  # nothing written yet: the first write goes at once
    first = tally.drain()
    assert first == [("HINCRBY", "d", "m\x1f0", 1), ("HINCRBYFLOAT", "d", "m\x1fsum", "0.25"), ("EXPIRE", "d", 60)]
    for i in range(3):
        now[0] += 0.2
        assert tally.add(
            [
                ("EXPIREAT", "h", 1000 + i),
                ("HINCRBY", "d", "m\x1f0", 1),
                ("HINCRBY", "h", "f", 2),
                ("HINCRBYFLOAT", "d", "m\x1fsum", repr(0.1)),
                ("HSET", "d", "m\x1flast", 200 + i),
                ("ZADD", "z", "GT", [0.5, 2.0, 1.0][i], "series"),
                ("SET", "other", i),
            ]
        ) == (i == 0)
    assert not tally.due() and tally.stale_in(1.25) == pytest.approx(0.65)
    now[0] += 0.5
    assert tally.due() and tally.stale_in(1.25) == pytest.approx(0.15)
    assert tally.drain() == [
        ("HINCRBY", "d", "m\x1f0", 3),
        ("HINCRBY", "h", "f", 6),
        ("HINCRBYFLOAT", "d", "m\x1fsum", repr(0.3)),
        ("HSET", "d", "m\x1flast", 202),
        ("ZADD", "z", "GT", 2.0, "series"),
        ("SET", "other", 0),
        ("SET", "other", 1),
        ("SET", "other", 2),
        ("EXPIREAT", "h", 1002),  # expiries last: they apply to keys the increments made
    ]
    assert len(tally) == 0 and not tally.due()


def test_summed_commands_leave_redis_as_the_per_job_commands_do(bench: BenchHandle) -> None:
    """The real commands of 50 jobs (durations.observe + history.finished), applied one by one
    under one prefix and summed under another, leave the same hashes and sorted sets."""
    from benchcelery.bench.keys import Keys
    from benchcelery.jobs import durations
    from benchcelery.jobs.succeeded import Commands

    history.configure(None)
    r = bench.redis
    now = time.time()
    tally = Tally()
    for prefix in ("bc:one:", "bc:sum:"):
        keys = Keys.from_prefix(prefix)
        durations._touched.clear()
        history.configure(None)  # forget which EXPIREATs and longest runs were sent
        pipe = r.pipeline(transaction=False)
        for i in range(50):
            meta = {
                "method": "testapp.tasks.noop",
                "queue": ["short", "default"][i % 2],
                "site": ["site1.local", "site2.local"][i % 3 % 2],
                "started_at": now - 0.01 * i,
                "enqueued_at": now - 0.5 - 0.01 * i,
            }
            commands = Commands()
            durations.observe(commands, keys, meta, now=now, waits=True)
            commands.list += history.finished(keys, meta, failed=False, now=now)
            if prefix == "bc:one:":
                for command in commands.list:
                    pipe.execute_command(*command)
            else:
                tally.add(commands.list)
        for command in tally.drain():
            pipe.execute_command(*command)
        pipe.execute()

    def contents(prefix: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in r.scan_iter(match=f"{prefix}*"):
            short = name.decode().removeprefix(prefix)
            kind = r.type(name)
            value: Any = r.hgetall(name) if kind == b"hash" else r.zrange(name, 0, -1, withscores=True)
            if kind == b"hash":
                value = {f: round(float(v), 4) if f.endswith(b"sum") else v for f, v in value.items()}
            out[short] = (value, r.ttl(name) > 0)
        return out

    one = contents("bc:one:")
    assert one and one == contents("bc:sum:")
    assert sum(int(v) for f, v in one["durations:short"][0].items() if f.split(b"\x1f")[1].isdigit()) == 25


def _enqueue(bench: BenchHandle, n: int) -> None:
    import benchcelery

    bench.rt()
    benchcelery.enqueue_many({"method": "testapp.tasks.noop", "queue": "short"} for _ in range(n))


def _counted(bench: BenchHandle) -> tuple[int, int]:
    """Jobs counted done in the duration histogram and in the history of the last minutes."""
    keys = bench.rt().keys
    fields = bench.redis.hgetall(keys.durations("short"))
    runs = sum(int(v) for f, v in fields.items() if f.split(b"\x1f")[-1].isdigit())
    done = sum(m.as_dict()["done"] for m in read.last_minutes(bench.redis, keys, minutes=10))
    return runs, done


def _calls(bench: BenchHandle) -> dict[str, int]:
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in bench.redis.info("commandstats").items()}


@pytest.mark.parametrize("pool", ["prefork", "solo"])
def test_a_worker_writes_its_metrics_summed_and_once_idle_without_stopping(bench: BenchHandle, pool: str) -> None:
    """Before: every job sent ~6 HINCRBY and 1 HINCRBYFLOAT of metrics (N of the latter). Now a
    write at most once a second, and a worker that finished its last job writes it while it waits
    for more (no stop, no further job)."""
    history.configure(None)
    n = 300
    _enqueue(bench, n)
    bench.redis.config_resetstat()
    worker = bench.start("worker", "--queue", "short", "--pool", pool)
    wait_until(lambda: _counted(bench) == (n, n), timeout=60, what=f"{n} jobs counted ({_counted(bench)})")
    assert worker.poll() is None  # written while idle, not at its stop
    calls = _calls(bench)
    # Per job: the fetch script's HINCRBY of the pending counter (1); the metrics only once a second.
    assert calls.get("hincrbyfloat", 0) <= n // 10, calls
    assert calls.get("hincrby", 0) < 2 * n, calls


def test_a_warm_shutdown_writes_what_the_worker_summed(bench: BenchHandle) -> None:
    """The worker stops as soon as its last job ran: what it summed is written by its stop, if its
    thread did not write it first; nothing is lost or counted twice."""
    history.configure(None)
    n = 200
    _enqueue(bench, n)
    worker = bench.start("worker", "--queue", "short")
    keys = bench.rt().keys
    wait_until(lambda: not bench.redis.hlen(keys.unacked) and not pending_total(bench), timeout=60, what="jobs ran")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    assert _counted(bench) == (n, n)
