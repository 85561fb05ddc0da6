"""``bench worker`` / ``bench worker-pool``: a Celery worker for every site of the bench (prefork
pool by default; ``bench worker --pool solo`` runs jobs in the worker's own process, worker/solo.py)."""

from __future__ import annotations

import socket
import uuid
from dataclasses import dataclass
from typing import Any

from benchcelery.bench.hosts import host_name
from benchcelery.runtime import Runtime, set_runtime
from benchcelery.util import boot
from benchcelery.util.proctitle import set_title


@dataclass
class WorkerOptions:
    queues: list[str]
    concurrency: int = 1
    burst: bool = False
    quiet: bool = False
    max_jobs_per_child: int | None = None
    max_memory_per_child_mb: int | None = None
    name: str | None = None
    events: bool = False  # send task events (Flower, `celery events`) from the start
    reload: bool = False  # restart with the new code when an app's Python file changes (reload.py)
    pool: str = "prefork"  # or "solo": jobs run in the worker's own main thread (solo.py)


POOLS = {
    "prefork": "benchcelery.worker.pool:TaskPool",  # Celery's prefork pool, a loop turn less per job
    "solo": "benchcelery.worker.solo:TaskPool",
}


def worker_name(queues: list[str], host: str | None = None) -> str:
    """Unique per process (Celery needs that for control replies): ``<queues>.<id>@<host>``."""
    return f"{'-'.join(queues)}.{uuid.uuid4().hex[:8]}@{host or socket.gethostname()}"


def run_worker(rt: Runtime, opts: WorkerOptions) -> int:
    """Run a worker in this process until it stops; returns its exit code (0 after a burst)."""
    from benchcelery.worker.burst import Burst
    from benchcelery.worker.events import install_control_answers
    from benchcelery.worker.fairness import SitePolicy
    from benchcelery.worker.heartbeat import Heartbeat
    from benchcelery.worker.lookahead import Lookahead
    from benchcelery.worker.promoter import Promote

    set_runtime(rt)
    rt.redis  # noqa: B018 - fail fast (exit 69) when Redis is unreachable
    app = rt.app
    app.conf.worker_consumer = "benchcelery.worker.consumer:Consumer"
    if opts.burst:
        # An idle BRPOP blocks this long; a burst worker's warm shutdown waits for it once.
        app.conf.broker_transport_options = {**app.conf.broker_transport_options, "polling_interval": 0.05}
    app.steps["consumer"].add(Burst)
    app.steps["consumer"].add(Lookahead)
    app.steps["worker"].add(Heartbeat)
    app.steps["worker"].add(Promote)  # delayed jobs and retries move to their queues (broker/delayed.py)
    app.steps["worker"].add(SitePolicy)  # weights, caps, rate limits (jobs/fairness.py)
    install_control_answers()
    _nice_pool_processes(rt)
    kind = "worker-pool" if opts.concurrency > 1 else "worker"
    title = f"bench {kind} --queue {','.join(opts.queues)} [{rt.bench.root}]"
    set_title(title)
    from benchcelery.broker import transport

    hostname = opts.name or worker_name(opts.queues, host_name(rt.settings.conf))
    transport.OWNER = hostname  # the jobs it takes name it (doctor, dashboard: who runs what)
    worker = app.Worker(
        hostname=hostname,
        pool_cls=POOLS[opts.pool],
        concurrency=opts.concurrency,
        queues=opts.queues,
        loglevel="WARNING" if opts.quiet else "INFO",
        quiet=opts.quiet,
        # Mingle/gossip cost a round of waiting at start and N^2 chatter. An event dispatcher always (so
        # `control enable_events` works); its heartbeats only while task events are on (events.py).
        without_gossip=True,
        without_mingle=True,
        without_heartbeat=False,
        task_events=opts.events,
        max_tasks_per_child=opts.max_jobs_per_child,
        max_memory_per_child=opts.max_memory_per_child_mb * 1024 if opts.max_memory_per_child_mb else None,
        optimization="fair",
        burst=opts.burst,
    )
    # Celery retitles the process when it starts ("[celeryd: ...] -active- (...)"); keep ours first,
    # so `ps aux | grep "bench worker"` finds it, with Celery's status after it.
    worker.set_process_status = lambda info: set_title(f"{title} {info}")  # type: ignore[method-assign]
    tweaks = worker.install_platform_tweaks

    def install_signal_handlers(w: Any) -> None:
        tweaks(w)
        if opts.pool == "solo":
            _second_term_waits(w)
        else:
            _second_term_is_cold(w)

    worker.install_platform_tweaks = install_signal_handlers  # type: ignore[method-assign]
    if opts.reload and not opts.burst:
        from benchcelery.worker import reload

        reload.watch(reload.app_dirs(rt.apps()), reload.request_restart)
    boot.booted()  # the collector was off since `bench` started (util/boot.py)
    from benchcelery.jobs import tally

    try:
        worker.start()
    finally:  # the pool has stopped: no job adds to the metrics summed meanwhile (warm or cold)
        tally.flush()
    return int(worker.exitcode or 0)


def _nice_pool_processes(rt: Runtime) -> None:
    """Each pool process lowers its CPU priority by ``background_process_niceness`` (Frappe's
    ``set_niceness``), so jobs yield to web requests on a shared machine; the worker's main
    process, which takes and acknowledges jobs, keeps its priority."""
    import os

    from celery.signals import worker_process_init

    increment = int(rt.settings.number("background_process_niceness"))

    def set_niceness(**_: Any) -> None:
        if increment:
            os.nice(increment)

    worker_process_init.connect(set_niceness, weak=False, dispatch_uid="benchcelery.niceness")


def _second_term_is_cold(worker: object) -> None:
    """TERM = warm shutdown; a second TERM = cold shutdown (Celery ignores repeated TERMs)."""
    import sys

    from celery.apps import worker as celery_worker

    def first_term(w: object) -> None:
        # The cold handler goes in before the line that announces it: a TERM sent as soon as the line
        # shows (it can interrupt this handler) must find it, not this one again.
        celery_worker.install_worker_term_hard_handler(w, sig="SIGTERM", verbose=False)
        celery_worker.safe_say(
            "worker: a second TERM will stop running jobs (cold shutdown); they go back to their queue", sys.__stdout__
        )

    celery_worker._shutdown_handler(worker, sig="SIGTERM", how="Warm", callback=first_term)


def _second_term_waits(worker: object) -> None:
    """With --pool solo the running job runs in this very thread: a cold shutdown cannot stop it
    early, so TERM (any number of them) lets it finish and then stops the worker; KILL stops it at
    once (the job goes back to its queue when its lease lapses)."""
    import sys

    from celery.apps import worker as celery_worker

    def first_term(w: object) -> None:
        celery_worker.safe_say(
            "worker: the running job finishes first (--pool solo runs it in this process); "
            "KILL stops it now, and it goes back to its queue",
            sys.__stdout__,
        )

    celery_worker._shutdown_handler(worker, sig="SIGTERM", how="Warm", callback=first_term)
