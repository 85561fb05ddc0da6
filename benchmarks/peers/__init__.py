"""The field comparison's systems and worker configurations.

Each peer's job code lives in its own module here (``huey_app``, ``taskiq_app``, ``saq_app``,
``dramatiq_app``, ``arq_app``), imported only by the peer's worker and by the probe, never by the
harness: a peer whose package is missing is skipped with one line. benchcelery, plain Celery and
rq reuse the harness's existing apps and worker command lines (``benchmarks.workers``).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from benchmarks.env import BIN, Env
from benchmarks.workers import Worker, by_name

P = "benchmarks.peers"


@dataclass(frozen=True)
class System:
    """Whose jobs: how to fill its queue, enqueue one job, enqueue in bulk (probe method names)."""

    key: str
    label: str
    dists: tuple[str, ...]  # distributions named in the report with their versions
    imports: tuple[str, ...]  # modules that must import for the system to run
    fill: str
    single: str
    bulk: str | None = None

    def missing(self) -> str | None:
        """The first module that is not installed, or None."""
        for name in self.imports:
            if importlib.util.find_spec(name) is None:
                return name
        return None

    def versions(self) -> dict[str, str]:
        out = {}
        for dist in self.dists:
            try:
                out[dist] = importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                out[dist] = "missing"
        return out


@dataclass(frozen=True)
class Config:
    """One worker configuration: a peer's command line, or one of the harness's ``Worker``s."""

    name: str
    system: str
    args: tuple[str, ...] = ()  # executable (in the venv's bin) then its arguments
    burst_args: tuple[str, ...] | None = None  # the burst-mode command line, if the peer has one
    base: Worker | None = None

    @property
    def has_burst(self) -> bool:
        return self.burst_args is not None or bool(self.base and self.base.burst_flag)

    def command(self, env: Env, burst: bool) -> list[str]:
        if self.base is not None:
            return self.base.command(env, burst)
        args = self.burst_args if burst and self.burst_args else self.args
        return [str(BIN / args[0]), *args[1:]]

    def cwd(self, env: Env) -> Path:
        return Path(str(self.base.cwd(env))) if self.base else env.peer_dir


def _existing(name: str) -> Config:
    worker = by_name([name])[0]
    return Config(name, worker.system, base=worker)


_HUEY = f"{P}.huey_app.huey"
_TASKIQ = ("taskiq", "worker", "--log-level", "WARNING")
_SAQ, _ARQ = f"{P}.saq_app.settings", f"{P}.arq_app.WorkerSettings"

SYSTEMS: tuple[System, ...] = (
    System("bench", "benchcelery", ("benchcelery", "celery", "kombu"), ("benchcelery",), "bench", "bench_enqueue",
           "bench_enqueue_many"),
    System("huey", "huey", ("huey",), ("huey",), f"{P}.huey_app:fill", f"{P}.huey_app:single"),
    System("taskiq-list", "taskiq (list)", ("taskiq", "taskiq-redis"), ("taskiq", "taskiq_redis"),
           f"{P}.taskiq_app:fill_list", f"{P}.taskiq_app:single_list"),
    System("taskiq-stream", "taskiq (stream)", ("taskiq", "taskiq-redis"), ("taskiq", "taskiq_redis"),
           f"{P}.taskiq_app:fill_stream", f"{P}.taskiq_app:single_stream"),
    System("saq", "saq", ("saq",), ("saq",), f"{P}.saq_app:fill", f"{P}.saq_app:single"),
    System("dramatiq", "dramatiq", ("dramatiq",), ("dramatiq",), f"{P}.dramatiq_app:fill",
           f"{P}.dramatiq_app:single", f"{P}.dramatiq_app:bulk"),
    System("arq", "arq", ("arq",), ("arq",), f"{P}.arq_app:fill", f"{P}.arq_app:single"),
    System("celery", "Celery", ("celery",), ("celery",), "celery", "celery_apply_async", "celery_group"),
    System("rq", "rq", ("rq",), ("rq",), "rq", "rq_enqueue", "rq_enqueue_many"),
)

CONFIGS: tuple[Config, ...] = (
    _existing("bench worker"),
    _existing("bench worker --pool solo"),
    _existing("bench worker-pool 2"),
    Config("huey -w1 -k thread", "huey", ("huey_consumer", _HUEY, "-w", "1", "-k", "thread", "-q")),
    Config("taskiq list -w1", "taskiq-list", (*_TASKIQ, f"{P}.taskiq_app:list_broker", "--workers", "1")),
    Config("taskiq list -w2", "taskiq-list", (*_TASKIQ, f"{P}.taskiq_app:list_broker", "--workers", "2")),
    Config("taskiq stream -w1", "taskiq-stream", (*_TASKIQ, f"{P}.taskiq_app:stream_broker", "--workers", "1")),
    Config("saq --workers 1", "saq", ("saq", _SAQ, "--workers", "1"),
           ("saq", f"{P}.saq_app.burst_settings", "--workers", "1")),
    Config("saq --workers 2", "saq", ("saq", _SAQ, "--workers", "2")),
    Config("dramatiq -p1 -t1", "dramatiq", ("dramatiq", f"{P}.dramatiq_app", "-p", "1", "-t", "1")),
    Config("dramatiq -p2 -t1", "dramatiq", ("dramatiq", f"{P}.dramatiq_app", "-p", "2", "-t", "1")),
    Config("arq", "arq", ("arq", _ARQ), ("arq", _ARQ, "--burst")),
    _existing("celery solo"),
    _existing("celery prefork 1"),
    _existing("rq worker (fork)"),
    _existing("rq SimpleWorker"),
)


def system(key: str) -> System:
    return next(s for s in SYSTEMS if s.key == key)


def available(names: list[str] | None = None) -> tuple[list[Config], list[str]]:
    """The configurations whose system is installed (optionally only ``names``), and one line per skip."""
    chosen, skipped, seen = [], [], set()
    for cfg in CONFIGS:
        if names is not None and cfg.name not in names and cfg.system not in names:
            continue
        lack = system(cfg.system).missing()
        if lack is None:
            chosen.append(cfg)
        elif cfg.system not in seen:
            seen.add(cfg.system)
            skipped.append(f"skipping {system(cfg.system).label}: module {lack!r} is not installed")
    return chosen, skipped
