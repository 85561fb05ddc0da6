"""Which processes a bench runs, decided once from its settings (data only; files.py renders it).

- one worker program per queue (short, default, long, then the custom queues of ``workers``),
  ``background_workers`` processes each (``workers.<queue>.background_workers`` wins), or one
  ``bench worker-pool --num-workers N`` when ``workers.<queue>.pool`` is set;
- ``bench schedule``, and ``bench realtime`` / ``bench dashboard`` / ``bench metrics`` when ``realtime`` /
  ``dashboard`` / ``metrics`` is enabled in the config (each only when the installed benchcelery has
  its module: ``COMMAND_MODULES``);
- the queue Redis when ``redis_queue`` points at this machine (127.0.0.1 / localhost).
"""

from __future__ import annotations

import re
import shutil
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlsplit

from benchcelery.bench.config import DEFAULTS, Settings
from benchcelery.bench.layout import Bench
from benchcelery.errors import ValidationError

# A warm shutdown waits for the running job; its hard time limit (timeout + 5 s) bounds that. A
# process manager waits the queue's timeout + STOP_GRACE after TERM before it SIGKILLs (Frappe's
# stopwaitsecs: timeout + 60), so a restart never kills a job that is within its time limit: the
# worker has 55 s past the hard limit to ack, restore prefetched messages and exit. The price: a
# restart (or stop) waits as long as the longest running job, up to 2 h on the long queue.
# ``workers.<queue>.stop_timeout`` sets a shorter wait; a job still running then is killed and goes
# back to its queue, to run again from the start.
STOP_GRACE = 60
# `bench start` (development) waits at most this long on Ctrl-C unless --stop-timeout says otherwise.
DEV_STOP_WAIT_MAX = 600
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class WorkerGroup:
    queue: str
    numprocs: int  # processes (``bench worker``) or pool size (``bench worker-pool``)
    pool: bool
    hard_limit: int  # seconds a job of this queue may run at most
    stop_wait: int  # seconds a process manager waits after TERM before SIGKILL
    events: bool = False  # worker_send_task_events: --events (Flower)

    @property
    def args(self) -> list[str]:
        events = ["--events"] if self.events else []
        if self.pool:
            return ["worker-pool", "--queue", self.queue, "--num-workers", str(self.numprocs), *events]
        return ["worker", "--queue", self.queue, *events]

    @property
    def instances(self) -> int:
        """Separate OS-level programs to run (a pool is one program)."""
        return 1 if self.pool else self.numprocs


@dataclass(frozen=True)
class Plan:
    bench: Bench
    name: str  # bench name used in program and unit names
    workers: list[WorkerGroup]
    schedule: bool
    realtime: bool
    own_redis: bool
    metrics: bool  # `bench metrics` (config ``metrics``: true)
    redis_port: int | None
    bench_command: list[str]  # absolute path of the bench script (or python -m benchcelery)
    dashboard: bool = False

    def command(self, *args: str) -> str:
        """The command as text (unquoted: for messages; deploy files quote ``argv``)."""
        return " ".join(self.argv(*args))

    def argv(self, *args: str) -> list[str]:
        return [*self.bench_command, *args]

    @property
    def redis_conf(self) -> Path:
        return self.bench.config_path / "redis_queue.conf"


def make_plan(settings: Settings) -> Plan:
    conf = settings.conf
    workers_conf = conf.get("workers") or {}
    default_n = _positive(conf.get("background_workers", DEFAULTS["background_workers"]), "background_workers")
    groups = []
    for name, spec in settings.queues.items():
        opts = workers_conf.get(name) or {}
        if not isinstance(opts, dict):
            raise ValidationError(f"workers.{name} must be an object {{timeout, background_workers}}")
        n = _positive(opts.get("background_workers", default_n), f"workers.{name}.background_workers")
        stop_wait = spec.timeout + STOP_GRACE
        if opts.get("stop_timeout"):
            stop_wait = _positive(opts["stop_timeout"], f"workers.{name}.stop_timeout")
        events = bool(conf.get("worker_send_task_events"))
        groups.append(WorkerGroup(name, n, bool(opts.get("pool")), spec.hard_limit, stop_wait, events))
    url = urlsplit(settings.redis_url)
    own = url.scheme == "redis" and (url.hostname or "") in LOCAL_HOSTS and not conf.get("redis_queue_sentinel_enabled")
    return Plan(
        bench=settings.bench,
        name=safe_name(settings.bench.name),
        workers=groups,
        schedule=has_command("schedule"),
        realtime=bool(conf.get("realtime")) and has_command("realtime"),
        own_redis=own,
        metrics=bool(conf.get("metrics")) and has_command("metrics"),
        redis_port=(url.port or 6379) if own else None,
        bench_command=bench_command(),
        dashboard=bool(conf.get("dashboard")) and has_command("dashboard"),
    )


def dev_stop_timeout(plan: Plan) -> int:
    """How long ``bench start`` waits for running jobs on Ctrl-C by default (development: capped)."""
    return min(max(g.stop_wait for g in plan.workers), DEV_STOP_WAIT_MAX)


def worker_host_plan(plan: Plan) -> Plan:
    """What a worker-only host runs (``--workers-only``): the workers; the scheduler, the realtime
    relay and the queue Redis stay on the bench's main host."""
    return replace(plan, schedule=False, realtime=False, own_redis=False, redis_port=None)


def bench_command() -> list[str]:
    """The ``bench`` script next to the running Python (the bench's virtualenv), exec'able as is."""
    script = Path(sys.executable).parent / "bench"
    if script.is_file():
        return [str(script)]
    found = shutil.which("bench")
    return [found] if found else [sys.executable, "-m", "benchcelery"]


# The module each optional program needs (the command's engine, not its click wrapper): the plan
# is data about the bench and must not import the CLI above it.
COMMAND_MODULES = {
    "schedule": "benchcelery.scheduler.beat",
    "realtime": "benchcelery.realtime.server",
    "dashboard": "benchcelery.dashboard.server",
}


def has_command(name: str) -> bool:
    """Is ``bench NAME`` available in this install (its module is present)? Unknown names: yes."""
    import importlib.util

    module = COMMAND_MODULES.get(name)
    try:
        return module is None or importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def safe_name(name: str) -> str:
    """Usable in supervisor program names and systemd unit names."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "bench"


def _positive(value: object, key: str) -> int:
    try:
        number = int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        number = 0
    if number < 1:
        raise ValidationError(f"Config key {key} must be a positive number (got {value!r})")
    return number
