"""``bench queue pause|resume|status``: hold a queue's jobs for the whole bench, without a restart."""

from __future__ import annotations

import click

from benchcelery.cli.base import CliContext, echo_json, format_option, pass_ctx, table


@click.group("queue")
def queue_group() -> None:
    """Pause, resume and show the queues of the bench.

    A paused queue still accepts jobs (they wait, counted); every worker stops taking its jobs
    within a second and takes them again within a second of `resume`. Jobs already running finish.
    """


@queue_group.command("pause")
@click.argument("queue")
@pass_ctx
def pause_cmd(obj: CliContext, queue: str) -> None:
    """Stop every worker taking QUEUE's jobs (persisted in Redis)."""
    from benchcelery.jobs.pause import pause

    done = pause(obj.runtime(), queue)
    click.echo(f"Paused queue {queue}" if done else f"Queue {queue} was paused already")


@queue_group.command("resume")
@click.argument("queue")
@pass_ctx
def resume_cmd(obj: CliContext, queue: str) -> None:
    """Let workers take QUEUE's jobs again."""
    from benchcelery.jobs.pause import resume

    done = resume(obj.runtime(), queue)
    click.echo(f"Resumed queue {queue}" if done else f"Queue {queue} was not paused")


@queue_group.command("status")
@format_option
@pass_ctx
def status_cmd(obj: CliContext, fmt: str) -> None:
    """Each queue: paused or running, its waiting and scheduled jobs (every site)."""
    from benchcelery.jobs.pause import status

    rows = status(obj.runtime())
    if fmt == "json":
        echo_json(rows)
        return
    lines = table(
        ("QUEUE", "STATE", "PENDING", "SCHEDULED"),
        [(r["queue"], "paused" if r["paused"] else "running", str(r["pending"]), str(r["scheduled"])) for r in rows],
    )
    click.echo("\n".join(lines))


def register(cli: click.Group) -> None:
    cli.add_command(queue_group)
