"""``bench worker`` and ``bench worker-pool``."""

from __future__ import annotations

import sys

import click

from benchcelery.cli.base import CliContext, pass_ctx

_queue_help = "Queue(s) to process, comma-separated (default: all queues)."


def _common(f):  # type: ignore[no-untyped-def]
    f = click.option("--queue", help=_queue_help)(f)
    f = click.option("--quiet", is_flag=True, help="Hide log output (warnings and errors only).")(f)
    f = click.option("--burst", is_flag=True, help="Process all pending jobs, then exit.")(f)
    f = click.option("--max-jobs-per-child", type=click.IntRange(min=1), help="Replace a pool process after N jobs.")(f)
    f = click.option(
        "--max-memory-per-child",
        type=click.IntRange(min=1),
        metavar="MB",
        help="Replace a pool process once it uses more than MB of memory.",
    )(f)
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
@click.option("-u", "--rq-username", help="Redis ACL user.")
@click.option("-p", "--rq-password", help="Redis ACL password.")
@pass_ctx
def worker_cmd(
    obj: CliContext,
    queue: str | None,
    quiet: bool,
    burst: bool,
    max_jobs_per_child: int | None,
    max_memory_per_child: int | None,
    strategy: str,
    rq_username: str | None,
    rq_password: str | None,
) -> None:
    """Start a worker (one job at a time) for every site of the bench."""
    _run(obj, queue, 1, quiet, burst, max_jobs_per_child, max_memory_per_child, strategy, rq_username, rq_password)


@click.command("worker-pool")
@_common
@click.option(
    "--num-workers", type=click.IntRange(min=1), default=2, show_default=True, help="Number of worker processes."
)
@click.option("-u", "--rq-username", help="Redis ACL user.")
@click.option("-p", "--rq-password", help="Redis ACL password.")
@pass_ctx
def worker_pool_cmd(
    obj: CliContext,
    queue: str | None,
    quiet: bool,
    burst: bool,
    max_jobs_per_child: int | None,
    max_memory_per_child: int | None,
    num_workers: int,
    rq_username: str | None,
    rq_password: str | None,
) -> None:
    """Start a pool of NUM_WORKERS worker processes for every site of the bench."""
    _run(
        obj, queue, num_workers, quiet, burst, max_jobs_per_child, max_memory_per_child, None, rq_username, rq_password
    )


def _run(
    obj: CliContext,
    queue: str | None,
    concurrency: int,
    quiet: bool,
    burst: bool,
    max_jobs: int | None,
    max_mem: int | None,
    strategy: str | None,
    username: str | None,
    password: str | None,
) -> None:
    from benchcelery.worker import WorkerOptions, run_worker

    if obj.site_option:
        obj.sites()  # --site is accepted as in the guide; a worker serves every site, but the name must exist
    rt = obj.runtime(username=username, password=password, strategy=strategy)
    queues = rt.settings.parse_queues(queue)
    code = run_worker(
        rt,
        WorkerOptions(
            queues=queues,
            concurrency=concurrency,
            burst=burst,
            quiet=quiet,
            max_jobs_per_child=max_jobs,
            max_memory_per_child_mb=max_mem,
        ),
    )
    sys.exit(code)


def register(cli: click.Group) -> None:
    cli.add_command(worker_cmd)
    cli.add_command(worker_pool_cmd)
