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
@click.option("--in", "in_", metavar="DURATION", help="Run no earlier than this from now: 90, 90s, 10m, 2h, 1d.")
@click.option(
    "--at", metavar="ISO-8601", help="Run no earlier than this time (2030-01-31T09:00:00+00:00; no zone = local)."
)
@click.option(
    "--retry", type=click.IntRange(0, 100), help="Retries after a failure (default: the queue's workers.<q>.retry)."
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
    in_: str | None,
    at: str | None,
    retry: int | None,
) -> None:
    """Enqueue METHOD (a dotted path in an installed app) for the site; prints the job id.

    With --in or --at the job waits in Redis (`bench jobs list --state scheduled`) until it is due.
    """
    from benchcelery.context import local
    from benchcelery.jobs.enqueue import check_kwargs

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
    when = _when(in_, at)
    sites = obj.sites()
    obj.runtime()
    for site in sites:
        local.site, local.user = site, "Administrator"
        job = _enqueue(when)(
            method,
            queue=queue,
            timeout=timeout,
            event=event,
            at_front=at_front,
            job_id=job_id,
            deduplicate=deduplicate,
            retry=retry,
            **kwargs,
        )
        click.echo(job.id if job is not None else f"Not queued: job {site}::{job_id} is already queued or running")


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _when(in_: str | None, at: str | None) -> tuple[str, float] | None:
    """("in", seconds) / ("at", epoch) of --in / --at; None for neither."""
    import datetime as dt

    if in_ and at:
        raise click.UsageError("Give --in or --at, not both")
    if in_:
        text = in_.strip().lower()
        unit = _UNITS.get(text[-1:], 0)
        try:
            seconds = float(text[:-1] if unit else text) * (unit or 1)
        except ValueError:
            raise click.BadParameter("must be a number of seconds or like 10m, 2h, 1d", param_hint="'--in'") from None
        if seconds < 0:
            raise click.BadParameter("must not be negative", param_hint="'--in'")
        return "in", seconds
    if at:
        try:
            return "at", dt.datetime.fromisoformat(at).timestamp()
        except ValueError:
            raise click.BadParameter("must be an ISO-8601 time", param_hint="'--at'") from None
    return None


def _enqueue(when: tuple[str, float] | None):  # type: ignore[no-untyped-def]
    """enqueue, or enqueue_in / enqueue_at bound to their time."""
    import functools

    from benchcelery.jobs import later
    from benchcelery.jobs.enqueue import enqueue

    if when is None:
        return enqueue
    return functools.partial(later.enqueue_in if when[0] == "in" else later.enqueue_at, when[1])


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
