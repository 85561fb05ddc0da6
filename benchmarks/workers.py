"""The worker command lines under comparison (drain and idle memory)."""

from __future__ import annotations

from dataclasses import dataclass

from benchmarks import apps
from benchmarks.env import BIN, Env

_CELERY_COMMON = ["--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "WARNING", "-Q", apps.QUEUE]


@dataclass(frozen=True)
class Worker:
    name: str
    system: str  # bench / rq / celery: whose jobs it runs
    args: tuple[str, ...]
    burst_flag: str | None  # None: no burst mode, stopped with SIGTERM once the counter reaches N
    in_bench: bool = False

    def command(self, env: Env, burst: bool) -> list[str]:
        exe = str(BIN / self.args[0])
        rest = list(self.args[1:])
        if self.system == "rq":
            rest += ["--url", env.url]
        if burst and self.burst_flag:
            rest.append(self.burst_flag)
        if self.system == "rq":
            rest.append(apps.QUEUE)
        return [exe, *rest]

    def cwd(self, env: Env) -> object:
        return env.bench.root if self.in_bench else env.peer_dir


WORKERS: tuple[Worker, ...] = (
    Worker("bench worker", "bench", ("bench", "worker", "--quiet"), "--burst", in_bench=True),
    # The job in the worker's own process: no pool process, no IPC.
    Worker("bench worker --pool solo", "bench", ("bench", "worker", "--quiet", "--pool", "solo"), "--burst", True),
    # The cost of task events (Flower): the same worker sending task events and event heartbeats.
    Worker("bench worker --events", "bench", ("bench", "worker", "--quiet", "--events"), "--burst", in_bench=True),
    Worker("bench worker-pool 2", "bench", ("bench", "worker-pool", "--num-workers", "2", "--quiet"), "--burst", True),
    Worker("rq worker (fork)", "rq", ("rq", "worker", "-q"), "--burst"),
    Worker("rq SimpleWorker", "rq", ("rq", "worker", "-q", "-w", "rq.worker.SimpleWorker"), "--burst"),
    Worker("rq worker-pool 2", "rq", ("rq", "worker-pool", "-q", "-n", "2"), "--burst"),
    Worker("celery solo", "celery", ("celery", "-A", apps.PEER_CELERY, "worker", "-P", "solo", *_CELERY_COMMON), None),
    Worker(
        "celery prefork 1",
        "celery",
        ("celery", "-A", apps.PEER_CELERY, "worker", "-P", "prefork", "-c", "1", *_CELERY_COMMON),
        None,
    ),
    Worker(
        "celery prefork 2",
        "celery",
        ("celery", "-A", apps.PEER_CELERY, "worker", "-P", "prefork", "-c", "2", *_CELERY_COMMON),
        None,
    ),
)


def by_name(names: list[str] | None = None) -> list[Worker]:
    return [w for w in WORKERS if names is None or w.name in names]
