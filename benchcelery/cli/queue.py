"""``bench queue pause|resume|status``: hold a queue's jobs without a restart.

Without ``--site`` a command acts on the whole bench (jobs/pause.py: every site's jobs on the queue
wait). With ``--site S`` (before or after the command, as everywhere) it acts on that site's jobs
only (jobs/site_pause.py): they wait, other sites' jobs on the queue keep running. Only an explicit
``--site`` narrows a command to a site: ``$BENCH_SITE`` and ``default_site`` do not, so a pause
typed without it is never silently one site's.
"""

from __future__ import annotations

from typing import Any

import click

from benchcelery.cli.base import CliContext, echo_json, format_option, pass_ctx, queues_option, table, usage_error


@click.group("queue")
def queue_group() -> None:
    """Pause, resume and show the queues of the bench, or of one site (--site).

    A paused queue still accepts jobs (they wait, counted); every worker stops taking its jobs
    within a second and takes them again within a second of `resume`. Jobs already running finish.
    With --site SITE only that site's jobs on the queue wait; other sites' jobs run.
    """


def _one_site(obj: CliContext) -> str | None:
    """The site named by an explicit --site, None for the whole bench."""
    if not obj.site_option:
        return None
    if obj.site_option == "all":
        raise usage_error("--site all: give one site, or no --site to act on the whole bench")
    return obj.site()


def _queue(obj: CliContext, queue: str) -> str:
    (name,) = queues_option(obj, queue, "QUEUE") or [queue]
    return name


# What each outcome says: the whole bench's (done, not done), then one site's (done, not done).
_SAID = {
    "pause": ("Paused queue {queue}", "Queue {queue} was paused already", "Paused", "Already paused:"),
    "resume": ("Resumed queue {queue}", "Queue {queue} was not paused", "Resumed", "Not paused:"),
}


@queue_group.command("pause")
@click.argument("queue")
@pass_ctx
def pause_cmd(obj: CliContext, queue: str) -> None:
    """Stop every worker taking QUEUE's jobs (persisted in Redis); with --site, that site's only."""
    _pause_or_resume(obj, queue, "pause")


@queue_group.command("resume")
@click.argument("queue")
@pass_ctx
def resume_cmd(obj: CliContext, queue: str) -> None:
    """Let workers take QUEUE's jobs again; with --site, that site's (a bench-wide pause still holds)."""
    _pause_or_resume(obj, queue, "resume")


def _pause_or_resume(obj: CliContext, queue: str, action: str) -> None:
    from benchcelery.jobs import pause as whole
    from benchcelery.jobs import site_pause

    bench_done, bench_not, site_done, site_not = _SAID[action]
    site = _one_site(obj)
    rt = obj.runtime()
    if site is None:
        done = (whole.pause if action == "pause" else whole.resume)(rt, queue)
        click.echo((bench_done if done else bench_not).format(queue=queue))
        return
    name = _queue(obj, queue)
    done = (site_pause.pause_site if action == "pause" else site_pause.resume_site)(rt.redis, rt.keys, site, name)
    click.echo(f"{site_done if done else site_not} {site}'s jobs on queue {name}")
    if action == "resume" and name in whole.paused(rt):
        click.echo(f"Queue {name} is paused for the whole bench: its jobs wait until `bench queue resume {name}`")


@queue_group.command("status")
@click.argument("queue", required=False)
@format_option
@pass_ctx
def status_cmd(obj: CliContext, queue: str | None, fmt: str) -> None:
    """Each queue (or QUEUE): paused or running, its waiting and scheduled jobs, and how its sites
    share it (weight, cap, running, paused); with --site, that site's only."""
    from benchcelery.jobs.fairness import policy
    from benchcelery.jobs.pause import status

    site = _one_site(obj)
    rt = obj.runtime()
    wanted = _queue(obj, queue) if queue else None
    rows = [r for r in status(rt) if wanted is None or r["queue"] == wanted]
    sharing = policy(rt.redis, rt.keys, [r["queue"] for r in rows])
    for row in rows:
        sites = sharing.get(row["queue"], {})
        row["sites"] = {s: v for s, v in sites.items() if site is None or s == site}
        if site is not None:  # that site's waiting jobs, and whether they are paused
            row["site"] = site
            row["site_paused"] = bool(sites.get(site, {}).get("paused"))
            row["pending"] = max(0, int(rt.redis.hget(rt.keys.pending_counts(row["queue"]), site) or 0))
    if fmt == "json":
        echo_json(rows)
        return
    lines = table(
        ("QUEUE", "STATE", "PENDING", "SCHEDULED"),
        [(r["queue"], "paused" if r["paused"] else "running", str(r["pending"]), str(r["scheduled"])) for r in rows],
    )
    for row in rows:
        lines += _site_lines(row, site)
    click.echo("\n".join(lines))


_EQUAL = {"weight": 1.0, "cap": None, "running": 0, "paused": False}


def _site_lines(row: dict[str, Any], site: str | None) -> list[str]:
    q, sites = row["queue"], row["sites"]
    if site is not None:
        sites = {site: sites.get(site, _EQUAL)}
    elif not sites:
        return [f"{q}: every site takes equal turns"]
    out = [f"{q}:"]
    for name, s in sorted(sites.items()):
        cap = "" if s["cap"] is None else f", at most {s['cap']} running ({s['running']} now)"
        paused = f", PAUSED (bench --site {name} queue resume {q})" if s["paused"] else ""
        out.append(f"  {name}: weight {s['weight']:g}{cap}{paused}")
    return out


def register(cli: click.Group) -> None:
    cli.add_command(queue_group)
