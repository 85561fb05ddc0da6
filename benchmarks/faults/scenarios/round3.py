"""Faults of round 3: Redis out of memory mid-drain (oom), Redis restarted empty under a running
scheduler (empty-restart), a worker stalled while it holds a job ahead (stall-held), and a pool
stalled during its own long job, which its other process takes again (pool-retake)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from benchcelery.broker.delivery import token_owner
from benchmarks import procs
from benchmarks.env import BIN
from benchmarks.faults.state import enqueue, idle, msg_n, runs, settle, starts, tally, wait_until
from benchmarks.faults.world import APP, FAIL_LATE, LEASE, RUN, SITE, TICK, World


def _spawn(w: World, name: str, *args: str) -> subprocess.Popen[bytes]:
    log = w.workdir / "logs" / f"{name}.log"
    log.parent.mkdir(exist_ok=True)
    return procs.spawn([str(BIN / "bench"), *args], w.env(), w.bench.root, log)


def _log(w: World, name: str) -> str:
    path = w.workdir / "logs" / f"{name}.log"
    return path.read_text(errors="replace") if path.exists() else ""


def _ticking(w: World, every: int) -> Path:
    """Schedule the app's ``tick`` every ``every`` s (scheduler_events "all"); returns the hooks file."""
    hooks = w.bench.root / "apps" / APP / "hooks.py"
    hooks.write_text(f"scheduler_events = {{'all': ['{TICK}']}}\n")
    w.bench.update_config({"scheduler_interval": every, "scheduler_tick_interval": 1})
    return hooks


def _doctor(w: World) -> dict[str, Any]:
    code, seconds, text = procs.run([str(BIN / "bench"), "doctor", "--no-db"], w.env(), w.bench.root, 60)
    return {
        "exit": code,
        "oom_finding": "out of memory" in text,
        "full_report": "Site: " in text,
        "seconds": round(seconds, 1),
    }


def sc_oom(w: World, jobs: int, oom_s: float) -> dict[str, Any]:
    """Redis at maxmemory (noeviction) for ``oom_s`` s mid-drain: two long jobs run throughout, jobs
    that fail and jobs with a job_id are running or held when it starts, `bench schedule` ticks."""
    w.start_broker([])
    hooks = _ticking(w, 5)
    long_ids = [40_000, 40_001]
    slow_ids = list(range(41_000, 41_040))  # every other one fails after 1.5 s, the others carry a job_id
    ids = list(range(jobs))
    import benchcelery

    enqueue(w, long_ids, ms=int((oom_s + 25) * 1000))
    benchcelery.init(site=SITE, bench_path=w.bench.root)
    for n in slow_ids:
        if n % 2:
            benchcelery.enqueue(FAIL_LATE, n=n, ms=1500)
        else:
            benchcelery.enqueue(RUN, n=n, ms=1500, job_id=f"tracked-{n}")
    enqueue(w, ids, ms=20)
    pool = w.spawn("pool", "oom-pool")
    single = w.spawn("worker", "oom-worker")
    beat = _spawn(w, "oom-schedule", "schedule")
    try:
        wait_until(lambda: all(starts(w, n) for n in long_ids), 60)
        wait_until(lambda: sum(starts(w, n) for n in slow_ids) >= 4, 60, 0.02)
        w.b.config_set("maxmemory-policy", "noeviction")
        w.b.config_set("maxmemory", max(1, int(w.b.info("memory")["used_memory"]) // 2))
        began = time.monotonic()
        ticks_before = w.c.llen("ticks")
        time.sleep(min(5.0, oom_s / 2))
        doctor = _doctor(w)
        time.sleep(max(0.0, oom_s - (time.monotonic() - began)))
        ticks_during = w.c.llen("ticks") - ticks_before
        w.b.config_set("maxmemory", 0)
        freed = time.monotonic()
        all_ids = [*long_ids, *slow_ids, *ids]
        settle_s = settle(w, all_ids, LEASE * 3 + 120)
        ticks_after = wait_until(lambda: w.c.llen("ticks") > ticks_before + ticks_during, 30)
        schedule_alive = beat.poll() is None
    finally:
        hooks.write_text("scheduler_events: dict = {}\n")
        for name, p in (("oom-pool", pool), ("oom-worker", single), ("oom-schedule", beat)):
            w.stop(p, name)
    out = tally(w, all_ids)
    statuses = [w.b.get(w.keys.job_status(f"{SITE}::tracked-{n}")) for n in slow_ids if not n % 2]
    out.update(
        oom_s=oom_s,
        long_job_starts=[starts(w, n) for n in long_ids],
        failing_jobs=len(slow_ids) // 2,
        failing_recorded=sum(1 for n in slow_ids if n % 2 and n in _recorded(w)),
        tracked_jobs=len(statuses),
        tracked_ran=sum(1 for n in slow_ids if not n % 2 and runs(w).get(n)),
        tracked_finished_status=sum(1 for s in statuses if s == b"finished"),
        schedule_alive=schedule_alive,
        schedule_ticks_during_oom=ticks_during,
        schedule_ticked_after=ticks_after is not None,
        doctor_during_oom=doctor,
        lost_acks=_lost_acks(w),
        recover_s=None if settle_s is None else round(time.monotonic() - freed, 1),
        worker_exits=list(w.exits),
    )
    return out


def _lost_acks(w: World) -> int:
    return int(w.b.get(w.keys.lost_acks) or 0)


def _recorded(w: World) -> set[int]:
    from benchmarks.faults.state import recorded_ns

    return recorded_ns(w)


def sc_empty_restart(w: World, jobs: int) -> dict[str, Any]:
    """Redis without persistence SIGKILLed and restarted empty mid-drain, a long job running and
    `bench schedule` ticking: the scheduler goes on, new jobs run, the long job's finish is not
    counted as a lapsed lease (it ran once)."""
    w.start_broker([])
    hooks = _ticking(w, 3)
    long_n = 50_000
    ids = list(range(jobs))
    pool = w.spawn("pool", "empty-pool")
    beat = _spawn(w, "empty-schedule", "schedule")
    try:
        wait_until(lambda: w.c.llen("ticks") >= 1, 60, 0.05)  # the scheduler is up (its runs reach the pool)
        enqueue(w, [long_n], ms=20_000)
        enqueue(w, ids, ms=20)
        wait_until(lambda: starts(w, long_n) >= 1, 60, 0.05)
        wait_until(lambda: len(set(runs(w)) & set(ids)) >= jobs // 3, 120, 0.01)
        w.kill_broker()
        time.sleep(1.0)
        w.start_broker([], fresh=False)  # no persistence: empty
        restarted = time.monotonic()
        ticks_at = w.c.llen("ticks")
        new_ids = list(range(jobs, jobs + 100))
        enqueue(w, new_ids, ms=5)
        resumed = wait_until(lambda: bool(set(runs(w)) & set(new_ids)), 60, 0.02)
        tick_again = wait_until(lambda: w.c.llen("ticks") > ticks_at, 60, 0.1)
        tick_again_s = None if tick_again is None else round(time.monotonic() - restarted, 1)
        wait_until(lambda: runs(w).get(long_n, 0) >= 1, 60)
        settle(w, new_ids, 60)
        schedule_alive = beat.poll() is None
    finally:
        hooks.write_text("scheduler_events: dict = {}\n")
        for name, p in (("empty-pool", pool), ("empty-schedule", beat)):
            w.stop(p, name)
    fresh = tally(w, new_ids)
    old = tally(w, ids)
    return {
        "jobs": jobs,
        "lost_by_design": old["lost"],
        "new_jobs": len(new_ids),
        "new_jobs_lost": fresh["lost"],
        "ran_twice": old["ran_twice"] + fresh["ran_twice"],
        "long_job_runs": runs(w).get(long_n, 0),
        "stale_acks": fresh["stale_acks"],
        "lost_acks": _lost_acks(w),
        "resumed_s": resumed,
        "schedule_alive": schedule_alive,
        "schedule_tick_after_restart_s": tick_again_s,
        "schedule_relocked": "re-acquired the scheduler lock" in _log(w, "empty-schedule"),
        "worker_exits": list(w.exits),
    }


def _in_flight_by(w: World, owner: str) -> set[int]:
    out = set()
    metas = w.b.hgetall(w.keys.inflight)
    for tag, raw in w.b.hgetall(w.keys.unacked).items():
        meta = metas.get(tag)
        if meta and token_owner(json.loads(meta)[0]) == owner and isinstance(msg_n(raw), int):
            out.add(msg_n(raw))
    return out


def _owner_of(w: World, n: int) -> str | None:
    metas = w.b.hgetall(w.keys.inflight)
    for tag, raw in w.b.hgetall(w.keys.unacked).items():
        if msg_n(raw) == n and tag in metas:
            return token_owner(json.loads(metas[tag])[0])
    return None


def sc_stall_held(w: World, reps: int, stall_s: float) -> dict[str, Any]:
    """SIGSTOP of a `bench worker` main process for ``stall_s`` s (past its lease) while it runs a
    job and holds the next one ahead; another worker takes over. The held job must run once."""
    w.start_broker([])
    trials = []
    all_ids: list[int] = []
    for rep in range(reps):
        ids = list(range(60_000 + rep * 1000, 60_000 + rep * 1000 + 300))
        all_ids += ids
        stalled = w.spawn("worker", f"stall-{rep}")
        enqueue(w, ids, ms=150)
        wait_until(lambda ids=ids: len(set(runs(w)) & set(ids)) >= 5, 60, 0.02)
        other = w.spawn("worker", f"stall-other-{rep}")
        held: set[int] = set()
        running: set[int] = set()
        for _ in range(100):  # stop it at a moment it holds one ahead
            children = {p.pid for p in procs.tree(stalled.pid)}
            now_running = {int(n) for n, pid in w.c.hgetall("running").items() if int(pid) in children}
            owner = next((o for n in now_running if (o := _owner_of(w, n))), None)
            if owner:
                os.kill(stalled.pid, signal.SIGSTOP)
                running = now_running
                held = _in_flight_by(w, owner) - running
                if held:
                    break
                os.kill(stalled.pid, signal.SIGCONT)
            time.sleep(0.05)
        time.sleep(stall_s)
        os.kill(stalled.pid, signal.SIGCONT)
        settle(w, ids, LEASE * 3 + 60)
        done = runs(w)
        trials.append(
            {
                "held_at_stop": sorted(held),
                "running_at_stop": sorted(running),
                "held_runs": [done.get(n, 0) for n in held],
                "held_starts": [starts(w, n) for n in held],
                "not_started_logged": _log(w, f"stall-{rep}").count("was not started"),
            }
        )
        w.stop(stalled, f"stall-{rep}")
        w.stop(other, f"stall-other-{rep}")
    out = tally(w, all_ids)
    held_all = {n for t in trials for n in t["held_at_stop"]}
    running_all = {n for t in trials for n in t["running_at_stop"]}
    out.update(
        stall_s=stall_s,
        reps=reps,
        held_at_stops=len(held_all),
        held_ran_twice=len(held_all & set(out["ran_twice_ids"])),
        running_at_stops=len(running_all),
        ran_twice_not_running=len(set(out["ran_twice_ids"]) - running_all),
        lost_acks=_lost_acks(w),
        trials=trials,
        worker_exits=list(w.exits),
    )
    return out


def sc_pool_retake(w: World, job_s: float, stall_s: float) -> dict[str, Any]:
    """A `worker-pool 2` main process SIGSTOPped ``stall_s`` s during its own ``job_s`` s job; a worker
    on another queue puts the job back; the pool's other process takes it again. The first run's
    finish must not remove the second run's in-flight record (counted as a stale ack instead)."""
    w.start_broker([])
    n = 70_000
    pool = w.spawn("pool", "retake-pool")
    sweeper = _spawn(w, "retake-sweeper", "worker", "--queue", "short", "--quiet")
    try:
        enqueue(w, [n], ms=int(job_s * 1000))
        wait_until(lambda: starts(w, n) >= 1, 60, 0.02)
        os.kill(pool.pid, signal.SIGSTOP)
        time.sleep(stall_s)
        os.kill(pool.pid, signal.SIGCONT)
        retaken = wait_until(lambda: starts(w, n) >= 2, LEASE * 2, 0.05)
        # While the second run goes on, its in-flight record and lease must stay, also after the
        # first run's finish.
        gaps = 0
        samples = 0
        deadline = time.monotonic() + job_s + 30
        while time.monotonic() < deadline and runs(w).get(n, 0) < 2 and retaken is not None:
            if runs(w).get(n, 0) == 1 and starts(w, n) >= 2:  # the first run finished, the second goes on
                samples += 1
                if not w.b.hlen(w.keys.inflight) or not w.b.zcard(w.keys.leases):
                    gaps += 1
            time.sleep(0.5)
        wait_until(lambda: idle(w), 60)
    finally:
        w.stop(pool, "retake-pool")
        w.stop(sweeper, "retake-sweeper")
    out = tally(w, [n])
    out.update(
        job_s=job_s,
        stall_s=stall_s,
        retaken=retaken is not None,
        starts=starts(w, n),
        second_run_samples_after_first_finished=samples,
        second_run_samples_without_record=gaps,
        lost_acks=_lost_acks(w),
        worker_exits=list(w.exits),
    )
    return out
