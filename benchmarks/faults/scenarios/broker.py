"""Faults of the broker Redis mid-drain: SIGKILLed and restarted with and without AOF (d, e),
frozen by CLIENT PAUSE or SIGSTOP (f)."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from benchmarks.faults.state import enqueue, runs, settle, starts, tally, wait_until
from benchmarks.faults.world import LEASE, RESUMED_AFTER, World


def sc_crash(w: World, fsync: str | None, jobs: int) -> dict[str, Any]:
    """(d)/(e) Redis SIGKILLed mid-drain and restarted on the same port and directory."""
    args = ["--appendonly", "yes", "--appendfsync", fsync] if fsync else []
    w.start_broker(args)
    ids = list(range(jobs))
    enqueue(w, ids)
    pool = w.spawn("pool", f"crash-{fsync or 'noaof'}")
    reached = wait_until(lambda: int(w.c.get("count") or 0) >= jobs // 3, 120, 0.01)
    count_at_crash = int(w.c.get("count") or 0)
    w.kill_broker()
    time.sleep(1.0)
    w.start_broker([], fresh=False)
    restarted = time.monotonic()
    extra: dict[str, Any] = {}
    if fsync is None:  # everything in Redis is gone by design: do the workers still take new jobs?
        new_ids = list(range(jobs, jobs + 100))
        time.sleep(3)
        enqueued = time.monotonic()
        enqueue(w, new_ids)
        resumed = wait_until(lambda: bool(set(runs(w)) & set(new_ids)), 60, 0.02)
        settle_s = settle(w, new_ids, 60)
        fresh = tally(w, new_ids)
        extra = {"new_jobs_after_restart": 100, "new_jobs_lost": fresh["lost"]}
        extra["new_jobs_ran_twice"] = fresh["ran_twice"]
        extra["new_jobs_done_s"] = None if settle_s is None else time.monotonic() - enqueued
    else:
        # past the jobs that were running at the crash (they finish without Redis): workers take new ones
        base = int(w.c.get("count") or 0) + RESUMED_AFTER
        resumed = wait_until(lambda: int(w.c.get("count") or 0) >= base, 120, 0.02)
        settle_s = settle(w, ids, LEASE * 3 + 60)
    w.alive(pool, "pool")
    w.stop(pool, "pool")
    out = tally(w, ids)
    if fsync is None:
        out["lost_by_design"] = out["lost"]
    out.update(
        fsync=fsync or "AOF off",
        crash_after_jobs=count_at_crash if reached is not None else None,
        resumed_s=resumed,
        recover_s=(time.monotonic() - restarted) if settle_s is not None else None,
        settled=settle_s is not None,
        worker_exits=list(w.exits),
        **extra,
    )
    return out


def sc_crash_reps(w: World, fsync: str | None, jobs: int, reps: int) -> dict[str, Any]:
    """``sc_crash`` ``reps`` times (a crash loses at most what the last second wrote: repeat it)."""
    trials = []
    for rep in range(reps):
        if rep:
            w.c.flushall()
            w.exits = []
        trials.append(sc_crash(w, fsync, jobs))
        w.stop_broker()
    out: dict[str, Any] = {"reps": reps}
    for key in ("jobs", "lost", "ran_twice", "recorded", "stale_acks", "recovered", "new_jobs_lost"):
        if key in trials[0]:
            out[key] = sum(t[key] for t in trials)
    out["settled"] = all(t["settled"] for t in trials)
    out["resumed_s"] = max((t["resumed_s"] for t in trials if t["resumed_s"] is not None), default=None)
    out["recover_s"] = max((t["recover_s"] for t in trials if t["recover_s"] is not None), default=None)
    out["worker_exits"] = [e for t in trials for e in t["worker_exits"]]
    out["trials"] = trials
    return out


def sc_freeze(w: World, how: str, jobs: int, seconds: float) -> dict[str, Any]:
    """(f) CLIENT PAUSE / kill -STOP of Redis mid-drain, with a long job running throughout."""
    w.start_broker([])
    long_n = 30_000
    enqueue(w, [long_n], ms=int((seconds + 25) * 1000))
    ids = list(range(jobs))
    enqueue(w, ids)
    pool = w.spawn("pool", f"{how}-pool")
    single = w.spawn("worker", f"{how}-worker")
    reached = wait_until(lambda: int(w.c.get("count") or 0) >= jobs // 4, 120, 0.01)
    wait_until(lambda: starts(w, long_n) >= 1, 30)
    count_before = int(w.c.get("count") or 0)
    assert w.broker_proc is not None
    if how == "pause":
        w.b.execute_command("CLIENT", "PAUSE", int(seconds * 1000), "ALL")
        time.sleep(seconds)
    else:
        os.kill(w.broker_proc.pid, signal.SIGSTOP)
        time.sleep(seconds)
        os.kill(w.broker_proc.pid, signal.SIGCONT)
    ended = time.monotonic()
    base = int(w.c.get("count") or 0) + RESUMED_AFTER
    resumed = wait_until(lambda: int(w.c.get("count") or 0) >= base, 60, 0.02)
    short_done = wait_until(lambda: len(runs(w)) >= jobs, LEASE * 3 + 60, 0.1)
    short_done = None if short_done is None else time.monotonic() - ended
    all_ids = [*ids, long_n]
    settle_s = settle(w, all_ids, LEASE * 3 + 60)
    for name, p in ((f"{how}-pool", pool), (f"{how}-worker", single)):
        w.stop(p, name)
    out = tally(w, all_ids)
    out.update(
        freeze=how,
        freeze_s=seconds,
        freeze_after_jobs=count_before if reached is not None else None,
        long_job_starts=starts(w, long_n),
        long_job_runs=runs(w).get(long_n, 0),
        resumed_s=resumed,
        short_jobs_done_s=short_done,
        recover_s=(time.monotonic() - ended) if settle_s is not None else None,
        worker_exits=list(w.exits),
    )
    return out
