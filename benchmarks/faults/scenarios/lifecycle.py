"""Retries and delays under faults (n): jobs that fail their first attempts and jobs enqueued to run
a few seconds later, drained by a ``worker-pool`` SIGKILLed and restarted again and again while the
broker Redis (``appendfsync always``) is SIGKILLed and restarted too. Counted job by job: how it
ended, how often it started against what its retry policy allows, when it first started against its
due time, and how far apart its attempts started against the retry interval."""

from __future__ import annotations

import time
from typing import Any

import redis

from benchmarks.common import say
from benchmarks.faults.state import failed, idle, msg_n, rec_n, recorded_ns, runs, wait_until, waiting
from benchmarks.faults.world import FLAKY, LEASE, SITE, World

RETRY_MAX = 2  # retries after the first attempt: a job may start RETRY_MAX + 1 times
RETRY_INTERVAL = 2.0  # seconds between a failed attempt and the next one
MS = 30  # each attempt's length
EARLY = 1.0  # a start this much before its due time is early
AOF = ["--appendonly", "yes", "--appendfsync", "always"]


def plan(n: int) -> tuple[int, int]:
    """(delay in seconds, failing attempts) of job n: two thirds run 1..8 s later, a quarter fail
    for good (3 failing starts > RETRY_MAX), the others fail 0, 1 or 2 times and then succeed."""
    return (0 if n % 3 == 0 else 1 + n % 8), n % 4


def allowed(fails: int) -> int:
    """Starts job n may take without a fault: its failing ones (up to the policy) and the last."""
    return min(fails, RETRY_MAX) + 1


def _enqueue(ids: list[int], root: Any) -> dict[int, float]:
    """Enqueue the jobs (enqueue_in for the delayed ones, enqueue_many for the others); due times."""
    import benchcelery

    benchcelery.init(site=SITE, bench_path=root)
    retry = benchcelery.Retry(max=RETRY_MAX, interval=RETRY_INTERVAL)
    due: dict[int, float] = {}
    now: list[dict[str, Any]] = []
    for n in ids:
        delay, fails = plan(n)
        kwargs = {"n": n, "fails": fails, "ms": MS}
        if delay:
            job = benchcelery.enqueue_in(delay, FLAKY, retry=retry, **kwargs)
            assert job is not None
            due[n] = float(job.extra["due"])
        else:
            now.append({"method": FLAKY, "kwargs": kwargs, "retry": retry})
            due[n] = time.time()
    for i in range(0, len(now), 1000):
        benchcelery.enqueue_many(now[i : i + 1000])
    return due


def _busy(w: World) -> bool:
    """Jobs wait in a queue or in the delayed set (run later, or a retry's next attempt)."""
    try:
        return bool(waiting(w)) or bool(w.b.zcard(w.keys.delayed))
    except redis.RedisError:
        return True


def _finished(w: World, ids: list[int]) -> bool:
    if not idle(w) or w.b.zcard(w.keys.delayed):
        return False
    ended = set(runs(w)) | recorded_ns(w)
    return all(n in ended for n in ids)


def _note_kill(w: World, held: set[int], running: set[int]) -> None:
    """What a kill hit: jobs the killed pool held (taken, not acknowledged) and those it was running."""
    try:
        held |= {n for n in map(msg_n, w.b.hvals(w.keys.unacked)) if isinstance(n, int)}
    except redis.RedisError:
        pass
    now_running = [int(n) for n in w.c.hkeys("running")]
    running |= set(now_running)
    if now_running:
        w.c.hdel("running", *now_running)


def _restart_broker(w: World) -> None:
    w.kill_broker()
    time.sleep(1.0)
    w.start_broker([], fresh=False)


def _start_times(w: World, ids: list[int]) -> dict[int, list[float]]:
    pipe = w.c.pipeline(transaction=False)
    for n in ids:
        pipe.lrange(f"at:{n}", 0, -1)
    return {n: [float(t) for t in found] for n, found in zip(ids, pipe.execute(), strict=True)}


def judge(w: World, ids: list[int], due: dict[int, float], hit: set[int]) -> dict[str, Any]:
    """The job-by-job count (``hit``: jobs held or running when a worker was killed)."""
    done, rec = runs(w), recorded_ns(w)
    attempts = {rec_n(r): len(r.get("attempts") or []) for r in failed(w)}
    begun = _start_times(w, ids)
    lost, twice, both, too_many, extra, extra_not_hit, unexpected, early, retry_early = ([] for _ in range(9))
    bad_record: list[int] = []
    late: list[float] = []
    for n in ids:
        delay, fails = plan(n)
        starts = len(begun[n])
        if not done.get(n) and n not in rec:
            lost.append(n)
        twice += [n] if done.get(n, 0) >= 2 else []
        both += [n] if done.get(n) and n in rec else []
        over = starts - allowed(fails)
        too_many += [n] if over >= 2 else []
        extra += [n] if over == 1 else []
        extra_not_hit += [n] if over >= 1 and n not in hit else []
        # a start cut short by a kill counts as a failing one, so such a job may succeed early
        unexpected += [n] if (fails <= RETRY_MAX) != bool(done.get(n)) and n not in hit else []
        bad_record += [n] if n in rec and attempts.get(n) != RETRY_MAX + 1 and n not in hit else []
        if begun[n]:
            early += [n] if begun[n][0] < due[n] - EARLY else []
            late += [begun[n][0] - due[n]] if delay else []
            gaps = [b - a for a, b in zip(begun[n], begun[n][1:], strict=False)]
            retry_early += [n] if any(g < RETRY_INTERVAL - EARLY for g in gaps) else []
    late.sort()
    return {
        "jobs": len(ids),
        "done": sum(1 for n in ids if done.get(n)),
        "failed_after_attempts": len(rec & set(ids)),
        "recorded": len(rec & set(ids)),
        "lost": len(lost),
        "lost_ids": lost,
        "ran_twice": len(twice),
        "ran_twice_ids": twice,
        "ran_twice_not_at_kill": len(set(twice) - hit),
        "done_and_recorded": len(both),
        "starts": sum(len(v) for v in begun.values()),
        "starts_allowed": sum(allowed(plan(n)[1]) for n in ids),
        "one_extra_start": len(extra),
        "extra_start_not_at_kill": len(extra_not_hit),
        "extra_start_not_at_kill_ids": extra_not_hit,
        "over_allowed_by_2_or_more": len(too_many),
        "over_allowed_ids": too_many,
        "unexpected_outcome_not_at_kill": len(unexpected),
        "unexpected_outcome_ids": unexpected,
        "record_attempts_wrong": len(bad_record),
        "early": len(early),
        "early_ids": early,
        "retry_gap_short": len(retry_early),
        "retry_gap_short_ids": retry_early,
        "delayed_start_late_s": {
            "median": late[len(late) // 2] if late else None,
            "p99": late[int(len(late) * 0.99)] if late else None,
            "max": late[-1] if late else None,
            "min": late[0] if late else None,
        },
    }


def sc_lifecycle(w: World, jobs: int, period: float, budget: float, redis_kills: int) -> dict[str, Any]:
    """(n) Retries and delays in flight while the pool is SIGKILLed every ``period`` s and the broker
    is SIGKILLed and restarted ``redis_kills`` times (AOF, fsync always)."""
    w.start_broker(AOF)
    ids = list(range(jobs))
    due = _enqueue(ids, w.bench.root)
    held: set[int] = set()
    running: set[int] = set()
    kills = broker_kills = 0
    started = time.monotonic()
    while _busy(w) and time.monotonic() - started < budget:
        proc = w.spawn("pool", f"life-{kills}")
        time.sleep(period)
        if kills % 3 == 1 and broker_kills < redis_kills:  # the broker goes down under a live pool
            _restart_broker(w)
            broker_kills += 1
            time.sleep(period)
        w.sigkill(proc, f"life-{kills}")
        kills += 1
        _note_kill(w, held, running)
    last_kill = time.monotonic()
    say(f"  {kills} worker kills, {broker_kills} Redis kills; {len(held)} held, {len(running)} running at kills")
    final = w.spawn("worker", "life-final")
    settled = wait_until(lambda: _finished(w, ids), LEASE * 3 + 60, 0.2)
    w.stop(final, "life-final")
    out = judge(w, ids, due, held | running)
    out.update(
        kills=kills,
        redis_kills=broker_kills,
        period_s=period,
        held_at_kills=len(held),
        running_at_kills=len(running),
        settled=settled is not None,
        recover_s=None if settled is None else time.monotonic() - last_kill,
        drain_s=last_kill - started,
        worker_exits=list(w.exits),
    )
    return out
