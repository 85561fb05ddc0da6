"""``bench worker`` and ``bench worker-pool``."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click

from benchcelery.cli.base import CliContext, pass_ctx

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
@click.option("--num-workers", type=click.IntRange(min=1), default=2, show_default=True, help="Worker processes.")
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
    rq_username: str | None,
    rq_password: str | None,
) -> None:
    from benchcelery.worker import WorkerOptions, run_worker

    if obj.site_option:
        obj.sites()  # accepted as in the guide (a worker serves every site), but the site must exist
    rt = obj.runtime(username=rq_username, password=rq_password, strategy=strategy)
    options = WorkerOptions(
        queues=rt.settings.parse_queues(queue),
        concurrency=concurrency,
        burst=burst,
        quiet=quiet,
        max_jobs_per_child=max_jobs_per_child,
        max_memory_per_child_mb=max_memory_per_child,
    )
    code = run_worker(rt, options)
    if burst:
        from benchcelery.worker.burst import exit_now

        exit_now(code)
    sys.exit(code)


def register(cli: click.Group) -> None:
    cli.add_command(worker_cmd)
    cli.add_command(worker_pool_cmd)
