"""``bench --site S queue pause|resume|status QUEUE``: one site's jobs on a queue (jobs/site_pause.py).

The bench-wide ``bench queue pause|resume|status`` (cli/queue.py) shares the ``queue`` group: with
``--site`` these commands act on that site's jobs only.
"""

from __future__ import annotations

import click

from benchcelery.cli.base import CliContext, echo_json, format_option, pass_ctx, queues_option, usage_error


def _site_and_queue(obj: CliContext, queue: str) -> tuple[str, str]:
    if not obj.site_option or obj.site_option == "all":
        raise usage_error("Give the site whose jobs to pause or resume: bench --site SITE queue ...")
    (name,) = queues_option(obj, queue, "QUEUE") or [queue]
    return obj.site(), name


@click.group("queue")
def queue_group() -> None:
    """Pause or resume one site's jobs on a queue (bench --site SITE queue pause QUEUE)."""


@queue_group.command("pause")
@click.argument("queue")
@pass_ctx
def pause_cmd(obj: CliContext, queue: str) -> None:
    """Pause the site's jobs on QUEUE: they wait, other sites' jobs run."""
    from benchcelery.jobs.site_pause import pause_site

    site, name = _site_and_queue(obj, queue)
    rt = obj.runtime()
    done = pause_site(rt.redis, rt.keys, site, name)
    click.echo(f"{'Paused' if done else 'Already paused:'} {site}'s jobs on queue {name}")


@queue_group.command("resume")
@click.argument("queue")
@pass_ctx
def resume_cmd(obj: CliContext, queue: str) -> None:
    """Resume the site's jobs on QUEUE (workers take them within a second)."""
    from benchcelery.jobs.site_pause import resume_site

    site, name = _site_and_queue(obj, queue)
    rt = obj.runtime()
    done = resume_site(rt.redis, rt.keys, site, name)
    click.echo(f"{'Resumed' if done else 'Not paused:'} {site}'s jobs on queue {name}")


@queue_group.command("status")
@format_option
@pass_ctx
def status_cmd(obj: CliContext, fmt: str) -> None:
    """Per queue: the sites paused, their weight, cap and running jobs (policy from site configs)."""
    from benchcelery.jobs.fairness import policy

    rt = obj.runtime()
    data = policy(rt.redis, rt.keys, rt.settings.queues)
    if fmt == "json":
        echo_json(data)
        return
    for q, sites in data.items():
        if not sites:
            click.echo(f"{q}: every site takes equal turns")
            continue
        click.echo(f"{q}:")
        for site, row in sorted(sites.items()):
            cap = "" if row["cap"] is None else f", at most {row['cap']} running ({row['running']} now)"
            paused = ", PAUSED" if row["paused"] else ""
            click.echo(f"  {site}: weight {row['weight']:g}{cap}{paused}")


def register(cli: click.Group) -> None:
    cli.add_command(queue_group)
