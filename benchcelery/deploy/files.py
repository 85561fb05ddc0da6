"""Rendering the deploy templates for one bench: Procfile, supervisor, systemd and Redis config.

Every ``render_*`` returns ``{path: text}`` without writing; ``write_files`` writes them (refusing
to overwrite a different existing file unless told to).
"""

from __future__ import annotations

import getpass
import os
import shlex
from collections.abc import Callable
from pathlib import Path

from benchcelery.bench.config import Settings
from benchcelery.bench.layout import Bench
from benchcelery.deploy.plan import Plan, make_plan, worker_host_plan
from benchcelery.deploy.safe import (
    check_path,
    check_user,
    redis_quote,
    supervisor_command,
    supervisor_logfile,
    supervisor_value,
    systemd_command,
    systemd_value,
)
from benchcelery.deploy.templates import render
from benchcelery.errors import BenchError
from benchcelery.store.server import find_server_binary

ACL_FILE = "redis_queue.acl"
REDIS_CONF = "redis_queue.conf"
REDIS_DATA = "pids"


def acl_path(bench: Bench) -> Path:
    return bench.config_path / ACL_FILE


# --- Redis ---
def render_redis(settings: Settings) -> dict[Path, str]:
    bench = settings.bench
    plan = make_plan(settings)
    port = plan.redis_port or 11000
    acl = acl_path(bench)
    data_dir = bench.config_path / REDIS_DATA
    text = render(
        "redis_queue.conf",
        bench_root=check_path(bench.root),
        port=int(port),
        data_dir=redis_quote(data_dir),
        pid_file=redis_quote(data_dir / "redis_queue.pid"),
        aclfile_line=(
            "\n# Users of this Redis (`bench create-rq-users`): an admin, and a bench user limited to\n"
            f"# this bench's keys and channels.\naclfile {redis_quote(acl)}\n"
            if acl.is_file()
            else ""
        ),
    )
    return {bench.config_path / REDIS_CONF: text}


# --- Procfile (development) ---
def procfile_lines(plan: Plan) -> list[tuple[str, str]]:
    """(name, command) pairs; commands use the plain ``bench`` (``bench start`` puts it on PATH)."""
    lines: list[tuple[str, str]] = []
    if plan.own_redis:
        lines.append(("redis_queue", "bench run-redis"))
    if plan.schedule:
        lines.append(("schedule", "bench schedule"))
    if plan.realtime:
        lines.append(("realtime", "bench realtime"))
    if plan.dashboard:
        lines.append(("dashboard", "bench dashboard"))
    if plan.metrics:
        lines.append(("metrics", "bench metrics"))
    # One development worker serves every queue (as bench does); custom queues get their own too.
    events = " --events" if plan.workers and plan.workers[0].events else ""
    lines.append(("worker", f"bench worker{events}"))
    for group in plan.workers[3:]:
        lines.append((f"worker_{group.queue}", f"bench worker --queue {group.queue}{events}"))
    return lines


def render_procfile(settings: Settings) -> dict[Path, str]:
    plan = make_plan(settings)
    body = "\n".join(f"{name}: {cmd}" for name, cmd in procfile_lines(plan))
    return {settings.bench.root / "Procfile": render("Procfile", bench_root=settings.bench.root, processes=body)}


# --- supervisor (production) ---
def render_supervisor(
    settings: Settings, user: str | None = None, skip_redis: bool = False, workers_only: bool = False
) -> dict[Path, str]:
    plan = worker_host_plan(make_plan(settings)) if workers_only else make_plan(settings)
    bench = settings.bench
    path = bench.config_path / "supervisor.conf"
    common = {
        "bench_root": supervisor_value(bench.root),
        "user": check_user(user or default_user()),
        "logs_path": supervisor_logfile(bench.logs_path),
    }
    workers_group = workers_group_name(settings)
    parts = [
        render(
            "supervisor/header.conf",
            conf_path=shlex.quote(str(path)).replace("%", "%%"),
            bench_name=plan.name,
            workers_group=workers_group,
            **common,
        )
    ]
    workers: list[str] = []
    if plan.schedule:
        program = f"{plan.name}-schedule"
        parts.append(
            render(
                "supervisor/schedule.conf", program=program, command=supervisor_command(plan.argv("schedule")), **common
            )
        )
        workers.append(program)
    for group in plan.workers:
        program = f"{plan.name}-{group.queue}-worker"
        why = (
            f"Queue {group.queue}: one `bench worker-pool` of {group.numprocs} processes (workers.{group.queue}.pool)."
            if group.pool
            else f"Queue {group.queue}: {group.numprocs} worker process(es) of one job at a time "
            f"(workers.{group.queue}.background_workers, else background_workers)."
        )
        parts.append(
            render(
                "supervisor/worker.conf",
                program=program,
                command=supervisor_command(plan.argv(*group.args)),
                queue=group.queue,
                numprocs=group.instances,
                numprocs_why=why,
                hard_limit=group.hard_limit,
                stop_wait=group.stop_wait,
                **common,
            )
        )
        workers.append(program)
    web: list[str] = []
    if plan.realtime:
        program = f"{plan.name}-realtime"
        parts.append(
            render(
                "supervisor/realtime.conf", program=program, command=supervisor_command(plan.argv("realtime")), **common
            )
        )
        web.append(program)
    if plan.dashboard:
        program = f"{plan.name}-dashboard"
        parts.append(
            render(
                "supervisor/dashboard.conf",
                program=program,
                command=supervisor_command(plan.argv("dashboard")),
                **common,
            )
        )
        web.append(program)
    if plan.metrics:
        program = f"{plan.name}-metrics"
        parts.append(
            render(
                "supervisor/metrics.conf", program=program, command=supervisor_command(plan.argv("metrics")), **common
            )
        )
        web.append(program)
    redis_programs: list[str] = []
    if plan.own_redis and not skip_redis:
        program = f"{plan.name}-redis-queue"
        command = supervisor_command([find_server_binary(), str(plan.redis_conf)])
        parts.append(render("supervisor/redis.conf", program=program, command=command, **common))
        redis_programs.append(program)
    groups = [
        (
            workers_group,
            workers,
            f"The scheduler and every worker: `supervisorctl stop|start|restart {workers_group}:*` acts on all "
            "of them; `bench restart` restarts them gracefully.",
        ),
        (f"{plan.name}-web", web, "The realtime relay, the dashboard and the metrics exporter."),
        (f"{plan.name}-redis", redis_programs, "The queue Redis, managed apart from the workers."),
    ]
    for group_name, programs, why in groups:
        if programs:
            parts.append(render("supervisor/group.conf", group=group_name, programs=",".join(programs), why=why))
    return {path: "".join(parts)}


# --- systemd (production) ---
def render_systemd(
    settings: Settings, user: str | None = None, skip_redis: bool = False, workers_only: bool = False
) -> dict[Path, str]:
    plan = worker_host_plan(make_plan(settings)) if workers_only else make_plan(settings)
    bench = settings.bench
    folder = bench.config_path / "systemd"
    n = plan.name
    bench_target, workers_target, redis_target = f"{n}.target", f"{n}-workers.target", f"{n}-redis.target"
    web_target = f"{n}-web.target"
    redis_unit = f"{n}-redis-queue.service" if plan.own_redis and not skip_redis else ""
    common = {
        "bench_root": systemd_value(bench.root),
        "bench_name": n,
        "user": check_user(user or default_user()),
        "logs_path": systemd_value(bench.logs_path),
        "workers_target": workers_target,
        "redis_target": redis_target,
        "web_target": web_target,
        "bench_target": bench_target,
        "redis_unit": redis_unit,
    }
    files: dict[Path, str] = {}
    worker_units: list[str] = []
    web_units: list[str] = []
    if plan.schedule:
        files[folder / f"{n}-schedule.service"] = render(
            "systemd/schedule.service", command=systemd_command(plan.argv("schedule")), **common
        )
        worker_units.append(f"{n}-schedule.service")
    if plan.realtime:
        files[folder / f"{n}-realtime.service"] = render(
            "systemd/realtime.service", command=systemd_command(plan.argv("realtime")), **common
        )
        web_units.append(f"{n}-realtime.service")
    if plan.dashboard:
        files[folder / f"{n}-dashboard.service"] = render(
            "systemd/dashboard.service", command=systemd_command(plan.argv("dashboard")), **common
        )
        web_units.append(f"{n}-dashboard.service")
    if plan.metrics:
        files[folder / f"{n}-metrics.service"] = render(
            "systemd/metrics.service", command=systemd_command(plan.argv("metrics")), **common
        )
        web_units.append(f"{n}-metrics.service")
    for group in plan.workers:
        unit = f"{n}-{group.queue}-worker@"
        files[folder / f"{unit}.service"] = render(
            "systemd/worker@.service",
            command=systemd_command(plan.argv(*group.args)),
            queue=group.queue,
            numprocs=group.instances,
            hard_limit=group.hard_limit,
            stop_wait=group.stop_wait,
            **common,
        )
        worker_units += [f"{unit}{i}.service" for i in range(1, group.instances + 1)]
    targets = [workers_target]
    files[folder / workers_target] = render(
        "systemd/group.target",
        why=f"Scheduler and workers of the bench {bench.root}",
        description="workers",
        wants=" ".join(worker_units),
        target_name=workers_target,
        **common,
    )
    if web_units:
        files[folder / web_target] = render(
            "systemd/group.target",
            why=f"Realtime relay, dashboard and metrics exporter of the bench {bench.root}",
            description="web",
            wants=" ".join(web_units),
            target_name=web_target,
            **common,
        )
        targets.append(web_target)
    if redis_unit:
        command = systemd_command([find_server_binary(), str(plan.redis_conf)])
        files[folder / redis_unit] = render("systemd/redis.service", command=command, **common)
        files[folder / redis_target] = render(
            "systemd/group.target",
            why=f"Queue Redis of the bench {bench.root}",
            description="redis",
            wants=redis_unit,
            target_name=redis_target,
            **common,
        )
        targets.append(redis_target)
    files[folder / bench_target] = render("systemd/bench.target", requires=" ".join(targets), **common)
    return files


def workers_group_name(settings: Settings) -> str:
    """The supervisor group of the scheduler and workers: ``<bench>-workers``, or config
    ``supervisor_workers_group`` (e.g. ``frappe-worker``, so the guide's ``supervisorctl stop
    frappe-worker:*`` works as written)."""
    from benchcelery.deploy.plan import safe_name

    custom = settings.get("supervisor_workers_group")
    return safe_name(str(custom)) if custom else f"{safe_name(settings.bench.name)}-workers"


# --- writing ---
def default_user() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return str(os.getuid())


def write_files(files: dict[Path, str], overwrite: bool | Callable[[Path], bool] = False) -> list[Path]:
    """Write each file (atomically); an existing different file is replaced only when ``overwrite``
    (or ``overwrite(path)``) says so, else BenchError. Returns the paths written."""
    written = []
    for path, text in files.items():
        if path.is_file() and path.read_text() != text:
            allowed = overwrite(path) if callable(overwrite) else overwrite
            if not allowed:
                raise BenchError(f"{path} exists and differs; use --yes to overwrite it")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
        written.append(path)
    return written


def write_dev_files(bench: Bench) -> list[Path]:
    """At ``bench init``: the Procfile and config/redis_queue.conf (existing files are kept)."""
    settings = Settings.from_bench(bench)
    (bench.config_path / REDIS_DATA).mkdir(parents=True, exist_ok=True)
    files = {**render_procfile(settings), **render_redis(settings)}
    return write_files({p: t for p, t in files.items() if not p.exists()})
