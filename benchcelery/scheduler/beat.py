"""``bench schedule``: Celery beat with a RedBeat scheduler that knows sites.

The entries (one per site x scheduled job) are kept in line with the apps' hooks by ``reconcile``;
the loop and lock timings are ``timing``'s; the lease sweeper is ``sweeper``'s. This module is the
tick: what is due, and firing it.

A tick costs one pipelined round trip when nothing is due (lock extend, heartbeat, ZCARD and the
due-range query of RedBeat's zset), plus one ``stat`` per site config; entries that are due are
loaded, advanced and published in a few pipelines however many there are.

Rules at each due slot:

- a site that is inactive (disabled, paused, maintenance mode, ``disable_scheduler``) is skipped
  and its entry advanced to the next slot, so nothing is replayed when it comes back;
- an active site's job is enqueued with the id ``scheduled_job::<method>`` and ``deduplicate``,
  so it is skipped while its previous run is queued or running (logged once, not every tick);
- the entry is advanced *before* the job is published (RedBeat's reserve), so a beat that dies
  in between loses that run rather than letting a standby fire it twice.

Faults it rides out without exiting: Redis unreachable (ticks retried every 2 s), Redis out of
memory (``maxmemory`` under ``noeviction``: the heartbeat is still written, nothing is advanced or
fired, and runs due meanwhile fire once when memory frees), and a lost lock (Redis restarted
without its data, or this process stalled past the lock's timeout): it takes the lock again, or
waits as a standby while another ``bench schedule`` holds it.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis
from redbeat.schedulers import RedBeatScheduler
from redis.exceptions import LockError

from benchcelery.bench.config import Settings
from benchcelery.bench.hosts import host_name
from benchcelery.broker.celery_app import settings_of
from benchcelery.broker.delivery import Delivery
from benchcelery.runtime import Runtime, get_runtime, set_runtime
from benchcelery.scheduler.events import ScheduledJob, is_due, next_run
from benchcelery.scheduler.reconcile import BATCH, Reconciler, ReconcileStats, chunks, config_fingerprint
from benchcelery.scheduler.schedules import Entry, MetaEncoder, decode_meta
from benchcelery.scheduler.state import SiteStates
from benchcelery.scheduler.sweeper import LeaseSweeper
from benchcelery.scheduler.timing import heartbeat_ttl, lock_timeout, loop_interval
from benchcelery.store import sentinel
from benchcelery.store.connection import socket_options
from benchcelery.util.proctitle import set_title

logger = logging.getLogger("benchcelery.scheduler")

__all__ = ["ReconcileStats", "Scheduler", "TickStats", "configure", "make_scheduler", "run_beat"]

FIRE_BATCH = 1000  # due runs enqueued per batch (the lock is extended between batches)
_HEARTBEAT = "#!lua flags=allow-oom\nreturn redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])"


@dataclass
class TickStats:
    """What one tick did (returned by ``Scheduler.run_tick``, used by benchmarks and tests)."""

    due: int = 0
    fired: int = 0
    skipped_inactive: int = 0
    skipped_running: int = 0
    errors: int = 0
    reconciled: bool = False
    seconds: float = 0.0
    sleep: float = 0.0


class Scheduler(RedBeatScheduler):
    """RedBeat scheduler with per-site gating, hooks reconciliation, no pile-up and a heartbeat."""

    Entry = Entry

    def __init__(self, app: Any, lock_key: str | None = None, lock_timeout: int | None = None, **kwargs: Any):
        settings = settings_of(app)
        kwargs["max_interval"] = kwargs.get("max_interval") or loop_interval(settings)
        super().__init__(app, lock_key=lock_key, lock_timeout=lock_timeout, **kwargs)
        self.settings = settings
        self.bench = settings.bench
        self.keys = settings.keys
        self.states = SiteStates(self.bench)
        self.reconciler = Reconciler(self.bench, self.keys, self.states)
        self._skipping: set[str] = set()  # run ids found still queued/running (logged once)
        self._last_extend = time.monotonic()
        self._trouble = ""  # the last ResponseError a tick hit (logged once), "" once ticks work
        self.host = host_name(settings.conf)
        # Jobs of dead workers go back to their queue even when no other worker is alive.
        lease = settings.number("job_lease")
        self.sweeper = LeaseSweeper(Delivery(get_runtime().redis, self.keys, lease), lease)

    # --- RedBeat hooks ---

    def setup_schedule(self) -> None:
        # Reconciling happens in the first tick, after the lock is ours: a standby must not write.
        pass

    def tick(self, min: Any = min, **kwargs: Any) -> float:
        # Beat's first tick starts the lease sweeper (later ticks: a no-op); close() stops it.
        self.sweeper.start()
        retry = 2.0 if self.max_interval > 2.0 else float(self.max_interval)
        try:
            stats = self.run_tick()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            # Retry soon; if the lock expired meanwhile, the next extend takes it again (or waits
            # as a standby while another beat holds it): never runs beside the new owner.
            logger.warning("Redis unreachable during a scheduler tick (%s); retrying", exc)
            return retry
        except redis.ResponseError as exc:  # out of memory, mostly: nothing advanced, nothing fired
            if str(exc) != self._trouble:
                self._trouble = str(exc)
                logger.error("Redis refused a scheduler tick (%s); retrying every %.0f s until it accepts", exc, retry)
            return retry
        if self._trouble:
            self._trouble = ""
            logger.info("Redis accepts scheduler ticks again")
        return stats.sleep

    def close(self) -> None:
        self.sweeper.stop()
        if self.lock is not None and self.lock.owned():
            try:
                self._redis.delete(self.keys.scheduler_heartbeat)
            except Exception:
                pass
        super().close()

    @property
    def _redis(self) -> Any:
        # Our own client (bytes, shared with enqueue); RedBeat's decodes responses to str.
        return get_runtime().redis

    # --- one tick ---

    def run_tick(self) -> TickStats:
        """One pass: extend the lock, reconcile if needed, fire or skip what is due, heartbeat."""
        started = time.monotonic()
        stats = TickStats()
        self._extend_lock(force=True)
        sites_changed = self.states.refresh()
        now = self.app.now().astimezone(UTC)
        now_ts = now.timestamp()
        r = self._redis
        pipe = r.pipeline(transaction=False)
        pipe.zcard(self.keys.redbeat_schedule)
        pipe.zrangebyscore(self.keys.redbeat_schedule, 0, now_ts)
        pipe.zrangebyscore(
            self.keys.redbeat_schedule, f"({now_ts}", now_ts + self.max_interval, start=0, num=1, withscores=True
        )
        # allow-oom: doctor sees this beat alive even while Redis is full
        pipe.eval(_HEARTBEAT, 1, self.keys.scheduler_heartbeat, self._heartbeat(now_ts), self._heartbeat_ttl())
        count, due_keys, upcoming, _ = pipe.execute()

        fingerprint = config_fingerprint(self.bench, self.states.common)
        plan = self.reconciler
        if plan.needed(sites_changed, fingerprint, count):
            try:
                self.reconcile(reload_hooks=fingerprint != plan.fingerprint)
                stats.reconciled = True
            except Exception:
                logger.exception("Could not reconcile the schedule with the apps' hooks")
                plan.last_reconcile = time.monotonic()
            plan.fingerprint = fingerprint
            due_keys = r.zrangebyscore(self.keys.redbeat_schedule, 0, now_ts)

        sleep = self.max_interval
        if upcoming:
            sleep = min(sleep, max(0.0, float(upcoming[0][1]) - now_ts))
        if due_keys:
            soonest = self._process_due([k.decode() for k in due_keys], now, stats)
            if soonest is not None:
                sleep = min(sleep, soonest)
        stats.seconds = time.monotonic() - started
        stats.sleep = max(sleep, 0.05)
        return stats

    def _process_due(self, keys: list[str], now: datetime, stats: TickStats) -> float | None:
        """Advance every due entry (one pipeline), then publish the runs of active sites."""
        r = self._redis
        metas: list[Any] = []
        for chunk in chunks(keys, BATCH):
            pipe = r.pipeline(transaction=False)
            for key in chunk:
                pipe.hget(key, "meta")
            metas.extend(pipe.execute())
        to_fire: list[tuple[str, ScheduledJob]] = []
        soonest: float | None = None
        advanced_meta = MetaEncoder(now)
        advance = r.pipeline(transaction=False)
        stale: list[str] = []
        interval, tz = self.reconciler.interval, self.tz
        for key, raw_meta in zip(keys, metas, strict=True):
            target = self.desired.get(key)
            if target is None:
                if self.reconciler.reconciled:
                    stale.append(key)
                continue
            site, job = target
            last, count = decode_meta(raw_meta)
            last = last or now
            if not is_due(job, last, now, interval, tz):
                # Scores are whole seconds; this one is due within the second.
                wait = (next_run(job, last, interval, tz) - now).total_seconds()
                soonest = wait if soonest is None else min(soonest, wait)
                continue
            stats.due += 1
            state = self.states.get(site)
            upcoming = next_run(job, now, interval, tz)
            advance.hset(key, "meta", advanced_meta(count + 1))
            advance.zadd(self.keys.redbeat_schedule, {key: int(upcoming.timestamp())})
            if state is None or not state.active:
                stats.skipped_inactive += 1
                continue
            to_fire.append((site, job))
        if stale:
            for chunk in chunks(stale, BATCH):
                advance.zrem(self.keys.redbeat_schedule, *chunk)
        if to_fire:
            last_run = {site: now.timestamp() for site, _ in to_fire}
            advance.hset(self.keys.scheduler_lastrun, mapping=last_run)  # type: ignore[arg-type]
        if len(advance):
            advance.execute()
        for start in range(0, len(to_fire), FIRE_BATCH):
            self._extend_lock()
            self._fire(to_fire[start : start + FIRE_BATCH], stats)
        return soonest

    def _fire(self, due: list[tuple[str, ScheduledJob]], stats: TickStats) -> None:
        """Enqueue due runs in one batch (deduplicated: a run still queued or running is skipped)."""
        from benchcelery.jobs.enqueue import enqueue_unique_many

        items = [
            {"site": site, "method": job.method, "queue": job.queue, "event": job.event, "job_id": job.job_id}
            for site, job in due
        ]
        try:
            results: list[Any] = list(enqueue_unique_many(items))
        except Exception:
            # One bad item (say, an app removed since the last reconcile) must not stop the others.
            results = []
            for item in items:
                try:
                    results.extend(enqueue_unique_many([item]))
                except Exception as exc:
                    stats.errors += 1
                    results.append(False)
                    logger.error("Could not enqueue %s for %s: %s", item["method"], item["site"], exc)
        enqueued: dict[str, dict[str, float]] = {}
        for (site, job), result in zip(due, results, strict=True):
            if result is False:
                continue
            run_id = f"{site}::{job.job_id}"
            if result is not None:  # scheduler status: the run's "last run" while it is queued or running
                enqueued.setdefault(site, {})[f"{job.event}::{job.method}"] = time.time()
            if result is None:
                stats.skipped_running += 1
                if run_id not in self._skipping:
                    self._skipping.add(run_id)
                    logger.warning(
                        "Skipped queueing %s for %s: its previous run is still queued or running", job.method, site
                    )
                continue
            self._skipping.discard(run_id)
            stats.fired += 1
            logger.info("Queued scheduled job %s (%s) for %s", job.method, job.event, site)
        if enqueued:
            pipe = self._redis.pipeline(transaction=False)
            for site, runs in enqueued.items():
                pipe.hset(self.keys.scheduler_enqueued(site), mapping=runs)  # type: ignore[arg-type]
            pipe.execute()

    # --- reconciling entries with hooks x sites ---

    @property
    def desired(self) -> dict[str, tuple[str, ScheduledJob]]:
        """Entry key -> (site, job) as of the last reconcile."""
        return self.reconciler.desired

    @property
    def tz(self) -> Any:
        return self.reconciler.tz

    def reconcile(self, reload_hooks: bool = True) -> ReconcileStats:
        """Make the RedBeat entries match hooks x sites (see ``Reconciler.reconcile``)."""
        return self.reconciler.reconcile(self._redis, reload_hooks)

    # --- lock and heartbeat ---

    def _extend_lock(self, force: bool = False) -> None:
        if not self.lock_key:
            return
        if self.lock is None:
            # RedBeat's beat_init handler failed to take the lock: never run unlocked.
            raise RuntimeError("beat: the scheduler lock is not held")
        if force or time.monotonic() - self._last_extend > self.max_interval:
            try:
                self.lock.extend(int(self.lock_timeout))
            except LockError:  # expired or gone: Redis restarted empty, or this process stalled
                logger.warning(
                    "The scheduler lock was lost (Redis restarted without its data, or this process was stalled "
                    "longer than the lock's %d s): taking it again, waiting while another `bench schedule` holds it",
                    int(self.lock_timeout),
                )
                self.lock.acquire(blocking=True)  # polls every loop interval, as a standby does
                logger.info("beat: re-acquired the scheduler lock")
            self._last_extend = time.monotonic()

    def _heartbeat(self, now_ts: float) -> str:
        return json.dumps(
            {
                "last_tick": now_ts,
                "pid": os.getpid(),
                "host": self.host,
                "entries": len(self.desired),
                "sites": len(self.states.states),
                "loop_interval": self.max_interval,
                "lock_timeout": self.lock_timeout,
            }
        )

    def _heartbeat_ttl(self) -> int:
        return heartbeat_ttl(self.max_interval)


# --- entry points ---


def make_scheduler(rt: Runtime, lock: bool = False) -> Scheduler:
    """A scheduler for this bench outside beat (benchmarks, tests): call ``run_tick()`` on it.

    Without ``lock`` it runs unlocked: never use it while a ``bench schedule`` is running.
    """
    set_runtime(rt)
    app = rt.app
    configure(app, rt.settings)
    scheduler = Scheduler(app=app, lazy=True)
    if not lock:
        scheduler.lock_key = None
    return scheduler


def configure(app: Any, settings: Settings) -> None:
    app.conf.beat_max_loop_interval = loop_interval(settings)
    app.conf.redbeat_lock_timeout = lock_timeout(settings)
    # RedBeat's own client only holds the lock; explicit options also silence its deprecated
    # fallback to broker_transport_options.
    app.conf.redbeat_redis_options = {
        **socket_options(),  # read timeout and keepalive of every bench connection (store/connection.py)
        "socket_keepalive": True,
        "socket_connect_timeout": 5,
        "health_check_interval": 25,
        **sentinel.redbeat_options(settings),
    }
    app.conf.beat_scheduler = "benchcelery.scheduler.beat:Scheduler"


def run_beat(rt: Runtime, loglevel: str = "INFO") -> int:
    """Run ``bench schedule`` in this process until it is stopped; returns the exit code."""
    set_runtime(rt)
    rt.redis.ping()  # fail fast (exit 69) when Redis is unreachable
    app = rt.app
    configure(app, rt.settings)
    title = f"bench schedule [{rt.bench.root}]"
    set_title(title)
    beat = app.Beat(
        scheduler=Scheduler, max_interval=loop_interval(rt.settings), loglevel=loglevel, quiet=True, socket_timeout=None
    )
    beat.set_process_title = lambda: set_title(title)  # Celery would retitle it "[celery beat]"
    logger.info(
        "Scheduler starting (loop %.1f s, lock %d s); waiting for the lock if another is active",
        loop_interval(rt.settings),
        lock_timeout(rt.settings),
    )
    beat.run()
    return 0
