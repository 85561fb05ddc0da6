"""The fault suite's scenarios, in the order they run, and their sizes (full or ``--quick``)."""

from __future__ import annotations

from dataclasses import dataclass

SCENARIOS = (
    "kill",
    "kill-fast",
    "orphan",
    "long",
    "crash-always",
    "crash-everysec",
    "noaof",
    "pause",
    "stop",
    "pause-long",
    "poison",
    "retry",
    "cold",
    "idle",
    "oom",
    "empty-restart",
    "stall-held",
    "pool-retake",
    "blackhole",
    "failover-enqueue",
    "lifecycle",
)


@dataclass
class Sizes:
    jobs: int
    kill_every: float
    kill_budget: float
    orphan_reps: int
    long_s: int
    crash_jobs: int
    crash_reps: int
    freeze_jobs: int
    freeze_s: float
    retry_reps: int
    cold_reps: int
    idle_s: float
    latency_samples: int
    oom_jobs: int = 600  # oom: short jobs behind the long, failing and tracked ones
    oom_s: float = 50.0  # oom: seconds Redis stays at maxmemory
    empty_jobs: int = 1000  # empty-restart
    stall_reps: int = 3  # stall-held
    stall_s: float = 60.0  # stall-held: SIGSTOP of the worker's main process (> job_lease)
    retake_job_s: float = 50.0  # pool-retake: the job's length
    retake_stall_s: float = 40.0  # pool-retake: SIGSTOP of the pool's main process (> job_lease)
    blackhole_jobs: int = 600
    blackhole_s: float = 60.0  # the 60 s: twice the default job_lease
    life_jobs: int = 2000  # lifecycle: jobs with retries and delays
    life_kill_every: float = 4.0  # lifecycle: seconds between SIGKILLs of the pool
    life_budget: float = 240.0  # lifecycle: seconds the kills may go on
    life_redis_kills: int = 3  # lifecycle: SIGKILLs of the broker (restarted, AOF always)


def sizes(quick: bool, jobs: int | None, kill_every: float | None) -> Sizes:
    if quick:
        s = Sizes(600, 2.0, 120, 1, 40, 800, 1, 800, 20, 3, 1, 30, 10)
        s.oom_jobs, s.oom_s, s.empty_jobs, s.stall_reps, s.stall_s = 300, 25.0, 400, 1, 45.0
        s.blackhole_jobs, s.blackhole_s = 300, 45.0
        s.life_jobs, s.life_budget, s.life_redis_kills = 600, 120.0, 2
    else:
        s = Sizes(3000, 2.0, 420, 2, 75, 2000, 3, 2000, 20, 5, 3, 30, 20)
    if jobs:
        s.jobs = jobs
    if kill_every:
        s.kill_every = kill_every
    return s
