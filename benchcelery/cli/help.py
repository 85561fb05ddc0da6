"""Every command's one-line summary (``bench --help``) and examples (end of ``bench CMD --help``).

Kept in one table so the command list reads like ``rq --help`` and a test can check that no command
lacks either. A command added to the CLI gets an entry here.
"""

from __future__ import annotations

import click

# command path -> (summary of at most SUMMARY_MAX characters, examples)
HELP: dict[str, tuple[str, list[str]]] = {
    "console": ("Python shell with enqueue() and frappe.*", ["bench --site site1.local console"]),
    "create-rq-users": (
        "Write a Redis ACL: admin + a bench user",
        ["bench create-rq-users", "bench create-rq-users --set-admin-password --use-rq-auth"],
    ),
    "dashboard": (
        "Web page of jobs, queues, workers, scheduler",
        ["bench dashboard", "bench dashboard --host 0.0.0.0 --port 9030 --read-only"],
    ),
    "dashboard token": (
        "Make a dashboard login token for a user",
        ["bench dashboard token --user alice", "bench dashboard token --user ops --read-only"],
    ),
    "disable-production": (
        "Undo setup production: unlink and reload",
        ["sudo bench disable-production", "bench disable-production --dry-run"],
    ),
    "disable-scheduler": ("Disable the scheduler for the site(s)", ["bench --site site1.local disable-scheduler"]),
    "doctor": (
        "Check workers, scheduler, queues, Redis, DB",
        ["bench doctor", "bench doctor --fail-on failed,dead-workers  # a cron health check"],
    ),
    "enable-scheduler": ("Enable the scheduler for the site(s)", ["bench --site site1.local enable-scheduler"]),
    "execute": (
        "Run an app function now; print its result",
        [
            "bench --site site1.local execute myapp.tasks.rebuild_index",
            'bench --site site1.local execute myapp.tasks.add --args "[1, 2]" --kwargs "{\'scale\': 10}"',
        ],
    ),
    "enqueue": (
        "Enqueue a job; prints its id",
        [
            "bench --site site1.local enqueue myapp.tasks.send_report --queue short",
            "bench enqueue myapp.tasks.rebuild --kwargs '{\"full\": true}' --job-id rebuild --deduplicate",
            "bench enqueue myapp.tasks.remind --in 10m --retry 3",
            "bench enqueue myapp.tasks.report --at 2030-01-31T09:00:00+00:00",
        ],
    ),
    "flower": ("Run Flower for this bench", ["bench flower", "bench flower --address 0.0.0.0 --port 5555"]),
    "init": ("Create a bench (sites/, config/, logs/)", ["bench init mybench --example-app"]),
    "jobs": ("List, show, retry, delete, cancel jobs", ["bench jobs list --state failed", "bench jobs retry --all"]),
    "jobs cancel": (
        "Remove a waiting job or stop a running one",
        ["bench jobs cancel site1.local::rebuild", "bench jobs cancel 3f2a9c1e --terminate"],
    ),
    "jobs give-up": (
        "Cancel a scheduled job or stop retrying one",
        ["bench jobs give-up 3f2a9c1e  # a retrying job is recorded as failed"],
    ),
    "jobs run-now": ("Queue a scheduled or retrying job now", ["bench jobs run-now 3f2a9c1e"]),
    "jobs delete": ("Delete a waiting job or a failed record", ["bench jobs delete 3f2a9c1e"]),
    "jobs list": (
        "List the site's jobs, newest failures first",
        [
            "bench jobs list --state failed",
            "bench jobs list --state retrying",
            "bench --site all jobs list --queue long -f json",
        ],
    ),
    "jobs retry": (
        "Run failed jobs again with their arguments",
        ["bench jobs retry 3f2a9c1e", "bench --site all jobs retry --all --queue short"],
    ),
    "jobs top": (
        "Live view of queues, workers, throughput",
        ["bench jobs top", "bench jobs top --once  # one frame, for scripts"],
    ),
    "jobs show": ("Show one job: state, kwargs, traceback", ["bench jobs show 3f2a9c1e", "bench jobs show ID -f json"]),
    "metrics": (
        "Prometheus exporter: queues, workers, scheduler",
        ["bench metrics", "bench metrics --port 9808 --once  # print one scrape"],
    ),
    "new-app": ("Create and install an app skeleton", ["bench new-app myapp"]),
    "new-site": ("Create a site", ["bench new-site site1.local"]),
    "publish-realtime": (
        "Send a realtime event to browsers",
        ["bench publish-realtime msgprint --message '\"Hello\"' --user a@example.com"],
    ),
    "purge-jobs": (
        "Delete waiting jobs and failed records",
        [
            "bench --site site1.local purge-jobs --queue long",
            "bench --site all purge-jobs --event daily",
            "bench purge-jobs --event nightly  # the tag of bench enqueue --event nightly",
            "bench --site site1.local purge-jobs --scheduled  # also the jobs waiting to run later or retry",
        ],
    ),
    "queue": (
        "Pause, resume and show the bench's queues",
        ["bench queue status", "bench queue pause long", "bench queue resume long"],
    ),
    "queue pause": ("Stop every worker taking a queue's jobs", ["bench queue pause long"]),
    "queue resume": ("Let workers take a queue's jobs again", ["bench queue resume long"]),
    "queue status": (
        "Show each queue: paused, pending, scheduled",
        ["bench queue status", "bench queue status -f json"],
    ),
    "ready-for-migration": (
        "Exit 0 when the site has no jobs to wait for",
        ["bench --site site1.local ready-for-migration"],
    ),
    "realtime": ("Run the socket.io relay", ["bench realtime"]),
    "realtime token": (
        "Print a socket.io token for a user",
        ["bench --site site1.local realtime token --user a@x.com"],
    ),
    "restart": (
        "Restart scheduler and workers gracefully",
        ["bench restart", "bench restart --systemd", "bench restart --web"],
    ),
    "run-redis": ("Run the bench's queue Redis (Procfile)", ["bench run-redis"]),
    "schedule": ("Run the scheduler for every site", ["bench schedule"]),
    "scheduler": (
        "Enable, disable, pause, resume or show",
        ["bench --site site1.local scheduler pause", "bench --site all scheduler status -v"],
    ),
    "set-config": (
        "Set a site or bench config key",
        ["bench --site site1.local set-config enable_scheduler 1", "bench set-config -g background_workers 2"],
    ),
    "set-redis-cache-host": ("Set redis_cache in the common config", ["bench set-redis-cache-host 10.0.0.5:13000"]),
    "set-redis-queue-host": (
        "Set redis_queue in the common config",
        ["bench set-redis-queue-host redis://10.0.0.5:11000"],
    ),
    "set-maintenance-mode": (
        "Maintenance mode on/off for the site(s)",
        ["bench --site site1.local set-maintenance-mode on"],
    ),
    "setup": (
        "Write Procfile, supervisor, systemd files",
        ["bench setup supervisor --yes", "bench setup systemd --dry-run"],
    ),
    "setup production": (
        "Link supervisor/systemd files in, reload",
        ["sudo bench setup production frappe", "bench setup production frappe --dry-run"],
    ),
    "setup logrotate": ("Write config/logrotate.conf (copytruncate)", ["bench setup logrotate --yes"]),
    "setup procfile": ("Write the Procfile for bench start", ["bench setup procfile --yes"]),
    "setup sudoers": ("Let a user run supervisorctl/systemctl", ["sudo bench setup sudoers frappe"]),
    "setup redis": ("Write config/redis_queue.conf", ["bench setup redis --dry-run"]),
    "setup supervisor": (
        "Write config/supervisor.conf",
        ["bench setup supervisor --user frappe --yes", "bench setup supervisor --skip-redis --dry-run"],
    ),
    "setup systemd": (
        "Write config/systemd/ units and targets",
        ["bench setup systemd --user frappe --yes", "sudo bench setup systemd --create-symlinks"],
    ),
    "show-config": ("Show the merged config", ["bench --site site1.local show-config", "bench show-config -f json"]),
    "show-pending-jobs": (
        "Pending, failed and running jobs per queue",
        ["bench --site site1.local show-pending-jobs -v", "bench --site all show-pending-jobs -f json"],
    ),
    "start": ("Run Redis, scheduler and workers (dev)", ["bench start", "bench start --no-prefix --stop-timeout 60"]),
    "trigger-scheduler-event": (
        "Run a scheduled event's jobs now",
        ["bench --site site1.local trigger-scheduler-event daily", "bench trigger-scheduler-event myapp.tasks.cleanup"],
    ),
    "use": ("Set the default site", ["bench use site1.local"]),
    "version": ("Versions of the engine, Redis and apps", ["bench version", "bench version -f json"]),
    "worker": (
        "Run a worker for every site",
        [
            "bench worker",
            "bench worker --queue short,default --burst",
            "bench worker --pool solo  # jobs in this process",
        ],
    ),
    "worker-pool": ("Run several worker processes", ["bench worker-pool --num-workers 4 --queue long"]),
}
SUMMARY_MAX = 45  # what `bench --help` shows of a summary without cutting it


def apply(group: click.Group, prefix: str = "") -> None:
    """Give the commands of ``group`` (recursively) their summary and examples from HELP."""
    for name, command in group.commands.items():
        path = f"{prefix} {name}".strip()
        if path in HELP:
            summary, examples = HELP[path]
            command.short_help = summary
            command.epilog = "\b\nExamples:\n" + "\n".join(f"  {e}" for e in examples)
        if isinstance(command, click.Group):
            apply(command, path)


def version_message() -> str:
    """``bench --version``: ours and the engine's versions, without importing Celery."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    def of(package: str) -> str:
        try:
            return version(package)
        except PackageNotFoundError:
            return "?"

    return (
        f"benchcelery {of('benchcelery')} (celery {of('celery')}, kombu {of('kombu')}, "
        f"celery-redbeat {of('celery-redbeat')}, Python {platform.python_version()})"
    )
