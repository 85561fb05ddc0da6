"""``bench worker`` and ``bench worker-pool``."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click

from benchcelery.cli.base import CliContext, pass_ctx, queues_option

_OPTIONS = [
    click.option("--queue", help="Queue(s) to process, comma-separated (default: all queues)."),
    click.option("--quiet", is_flag=True, help="Hide log output (warnings and errors only)."),
    click.option("--burst", is_flag=True, help="Process all pending jobs, then exit."),
    click.option("--max-jobs-per-child", type=click.IntRange(min=1), help="Replace a worker process after N jobs."),
    click.option(
        "--max-memory-per-child",
        type=click.IntRange(min=1),
        metavar="MB",
        help="Replace a worker process once it uses more than MB of memory.",
    ),
    click.option(
        "-E",
        "--events/--no-events",
        default=None,
        help="Send task events (Flower, celery events); default: config worker_send_task_events.",
    ),
    click.option(
        "--reload/--no-reload",
        default=None,
        help="Restart with the new code when an app's Python file changes; default: on under bench start.",
    ),
    click.option("-u", "--rq-username", help="Redis ACL user."),
    click.option("-p", "--rq-password", help="Redis ACL password."),
]


def _common(f: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(_OPTIONS):
        f = option(f)
    return f


@click.command("worker")
@_common
@click.option(
    "--strategy",
    type=click.Choice(["round_robin", "random"]),
    default="round_robin",
    show_default=True,
    help="How to pick among several queues.",
)
@pass_ctx
def worker_cmd(obj: CliContext, **opts: Any) -> None:
    """Start a worker (one job at a time) for every site of the bench."""
    _run(obj, concurrency=1, **opts)


@click.command("worker-pool")
@_common
@click.option(
    "--num-workers", type=click.IntRange(1, 256), default=2, show_default=True, help="Worker processes (at most 256)."
)
@pass_ctx
def worker_pool_cmd(obj: CliContext, num_workers: int, **opts: Any) -> None:
    """Start a pool of NUM_WORKERS worker processes for every site of the bench."""
    _run(obj, concurrency=num_workers, strategy=None, **opts)


def _run(
    obj: CliContext,
    concurrency: int,
    queue: str | None,
    quiet: bool,
    burst: bool,
    max_jobs_per_child: int | None,
    max_memory_per_child: int | None,
    strategy: str | None,
    events: bool | None,
    reload: bool | None,
    rq_username: str | None,
    rq_password: str | None,
) -> None:
    from benchcelery.broker.internals import require
    from benchcelery.worker import WorkerOptions, run_worker
    from benchcelery.worker import reload as reloading

    require()  # the private names of Celery/kombu/billiard/redis-py it relies on (one line, exit 1)
    queues = queues_option(obj, queue)
    if obj.site_option:
        obj.sites()  # accepted as in the guide (a worker serves every site), but the site must exist
    rt = obj.runtime(username=rq_username, password=rq_password, strategy=strategy)
    options = WorkerOptions(
        queues=queues or rt.settings.parse_queues(None),
        concurrency=concurrency,
        burst=burst,
        quiet=quiet,
        max_jobs_per_child=max_jobs_per_child,
        max_memory_per_child_mb=max_memory_per_child,
        events=bool(rt.settings.get("worker_send_task_events")) if events is None else events,
        reload=reloading.default_on() if reload is None else reload,
    )
    rt.redis  # noqa: B018 - an unreachable Redis is the one line shown (exit 69), before any notice
    _root_notice(quiet)
    _visible_logs()
    code = run_worker(rt, options)
    if burst:
        from benchcelery.worker.burst import exit_now

        exit_now(code)
    reloading.restart_if_requested()
    sys.exit(code)


def _visible_logs() -> None:
    """Job ids and exception text reach the worker's log: control characters in them are shown
    escaped (util/text.py), on the handlers Celery sets up for its own and the tasks' loggers."""
    from celery.signals import after_setup_logger, after_setup_task_logger

    from benchcelery.util.text import filter_handlers

    def install(logger: Any, **_: Any) -> None:
        filter_handlers(logger)

    after_setup_logger.connect(install, weak=False)
    after_setup_task_logger.connect(install, weak=False)


def _root_notice(quiet: bool) -> None:
    """One line of ours instead of Celery's 8-line superuser SecurityWarning (JSON-only messages make
    root merely unwise, not unsafe: Celery refuses root only with pickle)."""
    import os
    import warnings

    from celery.exceptions import SecurityWarning

    warnings.filterwarnings("ignore", category=SecurityWarning)
    if os.geteuid() == 0 and not quiet:
        click.echo("worker: running as root; in production run workers as an unprivileged user", err=True)


def register(cli: click.Group) -> None:
    cli.add_command(worker_cmd)
    cli.add_command(worker_pool_cmd)
