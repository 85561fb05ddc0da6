"""Faults of the workers: SIGKILLed mid-drain (a), holding an orphaned job (b), a job longer than
its lease (c), cold shutdown mid-job (i)."""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

from benchmarks import procs
from benchmarks.common import say
from benchmarks.env import BIN
from benchmarks.faults.state import enqueue, failed, idle, msg_n, runs, settle, starts, tally, wait_until, waiting
from benchmarks.faults.world import LEASE, RUN, SITE, World


def sc_kill(w: World, jobs: int, period: float, budget: float) -> dict[str, Any]:
    """(a) SIGKILL of the worker-pool main process group every ``period`` s, restarted each time."""
    w.start_broker([])
    ids = list(range(jobs))
    enqueue(w, ids)
    held: set[int] = set()  # in flight when a kill hit (taken, not acknowledged)
    running: set[int] = set()  # started and not finished when a kill hit
    kills = 0
    slow_cycles = 0
    started = time.monotonic()
    while waiting(w) and time.monotonic() - started < budget:
        before = int(w.c.get("count") or 0)
        proc = w.spawn("pool", f"kill-{kills}")
        time.sleep(period)
        w.sigkill(proc, f"kill-{kills}")
        kills += 1
        held |= {n for n in map(msg_n, w.b.hvals(w.keys.unacked)) if isinstance(n, int)}
        now_running = [int(n) for n in w.c.hkeys("running")]
        running |= set(now_running)
        if now_running:
            w.c.hdel("running", *now_running)
        if int(w.c.get("count") or 0) == before:
            slow_cycles += 1
    last_kill = time.monotonic()
    left_waiting = len(waiting(w))
    say(f"  {kills} kills; {len(held)} jobs held at a kill, {len(running)} running; final worker drains the rest")
    final = w.spawn("worker", "kill-final")
    recover = settle(w, ids, LEASE * 3 + 60)
    w.stop(final, "kill-final")
    out = tally(w, ids)
    out.update(
        kills=kills,
        period_s=period,
        held_at_kills=len(held),
        running_at_kills=len(running),
        ran_twice_not_held=len(set(out["ran_twice_ids"]) - held),
        cycles_without_progress=slow_cycles,
        waiting_when_kills_stopped=left_waiting,
        recover_s=None if recover is None else time.monotonic() - last_kill,
        worker_exits=list(w.exits),
    )
    return out


def _owner(w: World, n: int) -> tuple[str, str] | None:
    """(delivery tag, owner token) of job n while it is in flight."""
    for tag, raw in w.b.hgetall(w.keys.unacked).items():
        if msg_n(raw) == n:
            meta = w.b.hget(w.keys.inflight, tag)
            return tag.decode(), (json.loads(meta)[0] if meta else "")
    return None


def sc_orphan(w: World, reps: int) -> dict[str, Any]:
    """(b) A job held by a SIGKILLed worker: back in its queue, and running on the other worker."""
    w.start_broker([])
    workers = {name: w.spawn("worker", name) for name in ("orphan-A", "orphan-B")}
    trials = []
    for rep in range(reps):
        n = 10_000 + rep
        enqueue(w, [n], ms=8000)
        if wait_until(lambda n=n: w.c.hget("running", n) is not None, 60) is None:
            trials.append({"error": "the job did not start within 60 s"})
            continue
        pid = int(w.c.hget("running", n))
        victim = next(name for name, p in workers.items() if pid in {x.pid for x in procs.tree(p.pid)})
        owner = _owner(w, n)
        time.sleep(1.0)
        w.sigkill(workers[victim], victim)
        killed = time.monotonic()
        w.c.hdel("running", n)
        back = wait_until(lambda n=n, o=owner: _owner(w, n) != o, LEASE * 3, 0.02)
        again = wait_until(lambda n=n: starts(w, n) >= 2, LEASE * 3, 0.02)
        again_s = None if again is None else time.monotonic() - killed
        done = wait_until(lambda n=n: runs(w).get(n, 0) >= 1 and idle(w), 60)
        trials.append(
            {
                "back_in_queue_s": back,
                "running_again_s": again_s,
                "runs": runs(w).get(n, 0),
                "finished": done is not None,
            }
        )
        workers[victim] = w.spawn("worker", f"{victim}-{rep}")  # the supervisor restarts it
    for name, p in workers.items():
        w.stop(p, name)
    ids = [10_000 + i for i in range(reps)]
    out = tally(w, ids)
    out.update(trials=trials, worker_exits=list(w.exits))
    backs = [t["back_in_queue_s"] for t in trials if t.get("back_in_queue_s") is not None]
    out["recover_s"] = max(backs) if len(backs) == len(trials) else None
    return out


def sc_long(w: World, seconds: int) -> dict[str, Any]:
    """(c) A ``--timeout 150`` job longer than the lease, two live workers: runs exactly once."""
    w.start_broker([])
    workers = {name: w.spawn("worker", name) for name in ("long-A", "long-B")}
    n = 20_000
    code, _, out_text = procs.run(
        [
            str(BIN / "bench"),
            "--site",
            SITE,
            "enqueue",
            RUN,
            "--kwargs",
            json.dumps({"n": n, "ms": seconds * 1000}),
            "--timeout",
            "150",
        ],
        w.env(),
        w.bench.root,
        60,
    )
    if code != 0:
        raise RuntimeError(f"bench enqueue failed: {out_text}")
    done = wait_until(lambda: runs(w).get(n, 0) >= 1 and idle(w), seconds + 90, 0.2)
    time.sleep(LEASE / 3 + 6)  # a second run would have started by now
    for name, p in workers.items():
        w.stop(p, name)
    out = tally(w, [n])
    out.update(job_seconds=seconds, starts=starts(w, n), finished=done is not None, worker_exits=list(w.exits))
    return out


def sc_cold(w: World, reps: int) -> dict[str, Any]:
    """(i) Cold shutdown (a second SIGTERM) while a job runs: the job is in exactly one place."""
    w.start_broker([])
    trials = []
    for i in range(reps):
        n = 60_000 + i
        enqueue(w, [n], ms=6000)
        worker = w.spawn("worker", f"cold-{i}")
        if wait_until(lambda n=n: starts(w, n) >= 1, 60) is None:
            trials.append({"error": "the job did not start within 60 s"})
            w.sigkill(worker, f"cold-{i}")
            continue
        time.sleep(0.5)
        os.kill(worker.pid, signal.SIGTERM)
        time.sleep(0.5)
        os.kill(worker.pid, signal.SIGTERM)
        try:
            code, _ = procs.reap(worker, 30)
        except procs.Timeout:
            code = None
        w.c.hdel("running", n)
        in_queue = sum(msg_n(x) == n for x in waiting(w))
        in_flight = sum(msg_n(x) == n for x in w.b.hvals(w.keys.unacked))
        recs = sum((r.get("kwargs") or {}).get("n") == n for r in failed(w))
        again = w.spawn("worker", f"cold-{i}-after")
        ran = wait_until(lambda n=n: runs(w).get(n, 0) >= 1 and idle(w), LEASE * 3 + 30)
        w.stop(again, f"cold-{i}-after")
        trials.append(
            {
                "exit_code": code,
                "in_queue": in_queue,
                "in_flight": in_flight,
                "failed_records": recs,
                "ran_after_restart": ran is not None,
                "failed_records_after_run": sum((r.get("kwargs") or {}).get("n") == n for r in failed(w)),
            }
        )
    out = tally(w, [60_000 + i for i in range(reps)])
    out["one_place"] = sum(
        t.get("in_queue") == 1 and not t.get("in_flight") and not t.get("failed_records") for t in trials
    )
    out.update(trials=trials, worker_exits=list(w.exits))
    return out
