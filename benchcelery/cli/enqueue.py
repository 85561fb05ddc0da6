"""``bench enqueue`` (for scripts) and ``bench console``."""

from __future__ import annotations

import json

import click

from benchcelery.cli.base import CliContext, pass_ctx, queues_option


@click.command("enqueue")
@click.argument("method")
@click.option(
    "--queue", default="default", show_default=True, help="short, default, long or a queue of config `workers`."
)
@click.option("--kwargs", "kwargs_json", default="{}", help="Keyword arguments as a JSON object.")
@click.option("--job-id", help="Job id (deduplicated while queued or running with --deduplicate).")
@click.option("--deduplicate", is_flag=True, help="Skip when a job with --job-id is queued or running.")
@click.option("--at-front", is_flag=True, help="Run before the jobs already waiting in the queue.")
@click.option("--timeout", type=click.IntRange(1, 366 * 24 * 3600), help="Seconds (default: the queue's timeout).")
@click.option(
    "--event", metavar="TAG", help="Event tag (`bench purge-jobs --event TAG` purges the waiting jobs that have it)."
)
@pass_ctx
def enqueue_cmd(
    obj: CliContext,
    method: str,
    queue: str,
    kwargs_json: str,
    job_id: str | None,
    deduplicate: bool,
    at_front: bool,
    timeout: int | None,
    event: str | None,
) -> None:
    """Enqueue METHOD (a dotted path in an installed app) for the site; prints the job id."""
    from benchcelery.context import local
    from benchcelery.jobs.enqueue import check_kwargs, enqueue

    try:
        kwargs = json.loads(kwargs_json)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"must be a JSON object: {exc}", param_hint="'--kwargs'") from None
    except RecursionError:
        raise click.BadParameter("is nested too deeply", param_hint="'--kwargs'") from None
    if not isinstance(kwargs, dict):
        raise click.BadParameter("must be a JSON object", param_hint="'--kwargs'")
    check_kwargs(kwargs, "--kwargs key")
    queues_option(obj, queue)
    sites = obj.sites()
    obj.runtime()
    for site in sites:
        local.site, local.user = site, "Administrator"
        job = enqueue(
            method,
            queue=queue,
            timeout=timeout,
            event=event,
            at_front=at_front,
            job_id=job_id,
            deduplicate=deduplicate,
            **kwargs,
        )
        click.echo(job.id if job is not None else f"Not queued: job {site}::{job_id} is already queued or running")


@click.command("console")
@pass_ctx
def console_cmd(obj: CliContext) -> None:
    """Interactive Python with the site initialised; ``enqueue`` and ``frappe`` at hand."""
    import code

    import benchcelery
    from benchcelery.compat.console import install_console_shims

    site = obj.site()
    benchcelery.init(site=site, bench_path=str(obj.bench.root))
    namespace = {
        "benchcelery": benchcelery,
        "enqueue": benchcelery.enqueue,
        "frappe": install_console_shims(),
        "site": site,
    }
    banner = f"bench console for {site}: enqueue(), frappe.enqueue(), frappe.cache() are available."
    try:
        from IPython import start_ipython
    except ImportError:
        # Outside the except block: the shell's own tracebacks must not carry this ImportError.
        start_ipython = None
    if start_ipython is None:
        code.interact(banner=banner, local=namespace, exitmsg="")
    else:
        start_ipython(argv=[], user_ns=namespace, display_banner=False)


def register(cli: click.Group) -> None:
    cli.add_command(enqueue_cmd)
    cli.add_command(console_cmd)
