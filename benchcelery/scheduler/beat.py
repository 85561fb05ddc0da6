"""``bench schedule``: Celery beat with a RedBeat scheduler that knows sites.

One RedBeat entry per (site, scheduled job), named ``<site>::<event>::<method>[::<cron>]``, is
reconciled from the apps' hooks and the bench's sites: after taking the lock, whenever the site
list, apps.txt, a hooks.py, ``scheduler_interval`` or ``time_zone`` changes, when the number of
entries in Redis is not the expected one (a flush, a hand deletion) and every RECONCILE_EVERY s.

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

Timing: the loop wakes at least every ``min(scheduler_tick_interval, 10)`` s; the lock lives
``max(4 x loop, 10)`` s (``scheduler_lock_timeout`` overrides), so a standby ``bench schedule``
polling every loop interval takes over within 50 s of the active one dying (SIGKILL); a clean stop
releases the lock at once.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis
from redbeat.schedulers import RedBeatScheduler

from benchcelery.bench.config import DEFAULTS, Settings
from benchcelery.bench.hosts import host_name
from benchcelery.broker.celery_app import settings_of
from benchcelery.broker.delivery import Delivery, LeaseKeeper
from benchcelery.runtime import Runtime, get_runtime, set_runtime
from benchcelery.scheduler.events import ScheduledJob, is_due, load_jobs, next_run
from benchcelery.scheduler.schedules import (
    Entry,
    MetaEncoder,
    decode_meta,
    encode_meta,
    encode_schedule,
    zone,
)
from benchcelery.scheduler.state import SiteStates
from benchcelery.store import sentinel
from benchcelery.util.proctitle import set_title

logger = logging.getLogger("benchcelery.scheduler")

FIRE_BATCH = 1000  # due runs enqueued per batch (the lock is extended between batches)
MAX_LOOP_INTERVAL = 10.0  # s; keeps standby takeover under 60 s whatever scheduler_tick_interval says
MIN_LOCK_TIMEOUT = 10
RECONCILE_EVERY = 300.0  # s; a full reconcile even when nothing seems to have changed
RECOUNT_EVERY = 15.0  # s; at most this often when the number of entries in Redis looks wrong
BATCH = 1000  # entries per pipeline


def loop_interval(settings: Settings) -> float:
    """How long beat may sleep between ticks (s)."""
    tick = float(settings.get("scheduler_tick_interval") or DEFAULTS["scheduler_tick_interval"])
    return max(0.2, min(tick, MAX_LOOP_INTERVAL))


def lock_timeout(settings: Settings) -> int:
    """TTL of the active beat's lock (s): at least 4 loop intervals, so a slow tick never loses it."""
    configured = settings.get("scheduler_lock_timeout")
    floor = max(MIN_LOCK_TIMEOUT, int(4 * loop_interval(settings) + 0.999))
    return max(int(configured), floor) if configured else floor


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


@dataclass
class ReconcileStats:
    added: int = 0
    changed: int = 0
    removed: int = 0
    entries: int = 0
    problems: list[str] = field(default_factory=list)


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
        self.jobs: list[ScheduledJob] = []
        self.desired: dict[str, tuple[str, ScheduledJob]] = {}  # entry key -> (site, job)
        self.interval = float(DEFAULTS["scheduler_interval"])
        self.tz_name = "UTC"
        self._fingerprint: Any = None
        self._last_reconcile = 0.0
        self._reconciled = False  # a reconcile succeeded: entries unknown to it are stale
        self._problems: list[str] | None = None
        self._skipping: set[str] = set()  # run ids found still queued/running (logged once)
        self._last_extend = time.monotonic()
        self.host = host_name(settings.conf)
        # Jobs of dead workers go back to their queue even when no other worker is alive.
        lease = settings.number("job_lease")
        self.sweeper = LeaseKeeper([], lease, Delivery(get_runtime().redis, self.keys, lease))
        self.sweeper.start()

    # --- RedBeat hooks ---

    def setup_schedule(self) -> None:
        # Reconciling happens in the first tick, after the lock is ours: a standby must not write.
        pass

    def tick(self, min: Any = min, **kwargs: Any) -> float:
        try:
            return self.run_tick().sleep
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            # Retry soon; if the lock expired meanwhile, the next extend fails and beat exits
            # (a supervisor restarts it as a standby) rather than running beside the new owner.
            logger.warning("Redis unreachable during a scheduler tick (%s); retrying", exc)
            return 2.0 if self.max_interval > 2.0 else float(self.max_interval)

    def close(self) -> None:
        self.sweeper.stopped.set()
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
        pipe.set(self.keys.scheduler_heartbeat, self._heartbeat(now_ts), ex=self._heartbeat_ttl())
        count, due_keys, upcoming, _ = pipe.execute()

        fingerprint = self._config_fingerprint()
        since = time.monotonic() - self._last_reconcile
        # A count that differs from what we wrote means entries were lost (flush, failover) or
        # added behind our back; re-check soon, but not every tick.
        if (
            sites_changed
            or fingerprint != self._fingerprint
            or since > RECONCILE_EVERY
            or (count != len(self.desired) and since > RECOUNT_EVERY)
        ):
            try:
                self.reconcile(reload_hooks=fingerprint != self._fingerprint)
                stats.reconciled = True
            except Exception:
                logger.exception("Could not reconcile the schedule with the apps' hooks")
                self._last_reconcile = time.monotonic()
            self._fingerprint = fingerprint
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
        for chunk in _chunks(keys, BATCH):
            pipe = r.pipeline(transaction=False)
            for key in chunk:
                pipe.hget(key, "meta")
            metas.extend(pipe.execute())
        to_fire: list[tuple[str, ScheduledJob]] = []
        soonest: float | None = None
        advanced_meta = MetaEncoder(now)
        advance = r.pipeline(transaction=False)
        stale: list[str] = []
        for key, raw_meta in zip(keys, metas, strict=True):
            target = self.desired.get(key)
            if target is None:
                if self._reconciled:
                    stale.append(key)
                continue
            site, job = target
            last, count = decode_meta(raw_meta)
            last = last or now
            if not is_due(job, last, now, self.interval, self.tz):
                # Scores are whole seconds; this one is due within the second.
                wait = (next_run(job, last, self.interval, self.tz) - now).total_seconds()
                soonest = wait if soonest is None else min(soonest, wait)
                continue
            stats.due += 1
            state = self.states.get(site)
            upcoming = next_run(job, now, self.interval, self.tz)
            advance.hset(key, "meta", advanced_meta(count + 1))
            advance.zadd(self.keys.redbeat_schedule, {key: int(upcoming.timestamp())})
            if state is None or not state.active:
                stats.skipped_inactive += 1
                continue
            to_fire.append((site, job))
        if stale:
            for chunk in _chunks(stale, BATCH):
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
        for (site, job), result in zip(due, results, strict=True):
            if result is False:
                continue
            run_id = f"{site}::{job.job_id}"
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

    # --- reconciling entries with hooks x sites ---

    @property
    def tz(self) -> Any:
        return zone(self.tz_name)

    def _config_fingerprint(self) -> Any:
        apps_txt = self.bench.sites_path / "apps.txt"
        apps = self.bench.apps()
        files = []
        from benchcelery.scheduler.events import hooks_files

        for path in hooks_files(apps):
            try:
                st = os.stat(path)
                files.append((path, st.st_mtime_ns, st.st_size))
            except OSError:
                files.append((path, 0, 0))
        common = self.states.common
        return (
            _stat(apps_txt),
            tuple(files),
            common.get("scheduler_interval"),
            common.get("time_zone"),
            json.dumps(common.get("allowed_methods"), sort_keys=True),
        )

    def reconcile(self, reload_hooks: bool = True) -> ReconcileStats:
        """Make the RedBeat entries match hooks x sites: add new, update changed, delete gone.

        New entries start from now (a new job waits for its next slot); changed ones keep their
        last run. Problems (bad cron, unimportable method, unknown event) are logged once and
        stored for ``scheduler status --verbose``.
        """
        stats = ReconcileStats()
        common = self.states.common
        try:
            self.interval = float(common.get("scheduler_interval") or DEFAULTS["scheduler_interval"])
        except (TypeError, ValueError):
            self.interval = float(DEFAULTS["scheduler_interval"])
        problems: list[str] = []
        tz_name = str(common.get("time_zone") or DEFAULTS["time_zone"])
        try:
            zone(tz_name)
        except ValueError as exc:
            problems.append(f"bench: {exc}; using UTC")
            tz_name = "UTC"
        self.tz_name = tz_name
        extra = common.get("allowed_methods") or []
        extra = extra if isinstance(extra, list) else []
        jobs, bad = load_jobs(self.bench.apps(), extra, reload=reload_hooks)
        problems.extend(str(p) for p in bad)
        self.jobs = jobs
        sites = self.states.sites
        desired: dict[str, tuple[str, ScheduledJob]] = {}
        definitions: dict[str, str] = {}
        for job in jobs:
            schedule = encode_schedule(job.cron, self.interval, self.tz_name)
            for site in sites:
                name = job.entry_name(site)
                key = self.keys.redbeat_entry(name)
                desired[key] = (site, job)
                definitions[key] = json.dumps(
                    {
                        "name": name,
                        "task": job.method,
                        "args": [],
                        "kwargs": {},
                        "options": {
                            "queue": job.queue,
                            "headers": {"site": site, "event": job.event, "method": job.method},
                        },
                        "schedule": schedule,
                        "enabled": True,
                    },
                    sort_keys=True,
                )

        r = self._redis
        existing = [k.decode() for k in r.zrange(self.keys.redbeat_schedule, 0, -1)]
        stored: dict[str, tuple[Any, Any]] = {}
        for chunk in _chunks(existing, BATCH):
            pipe = r.pipeline(transaction=False)
            for key in chunk:
                pipe.hmget(key, "definition", "meta")
            for key, values in zip(chunk, pipe.execute(), strict=True):
                stored[key] = (values[0], values[1])
        now = datetime.now(UTC)
        now_meta = encode_meta(now, 0)
        pipe = r.pipeline(transaction=False)
        for key, definition in definitions.items():
            old = stored.get(key)
            if old is not None and old[0] is not None and old[0].decode() == definition:
                continue
            _site, job = desired[key]
            last = decode_meta(old[1])[0] if old is not None else None
            if old is None:
                stats.added += 1
            else:
                stats.changed += 1
            pipe.hset(key, "definition", definition)
            pipe.hsetnx(key, "meta", now_meta)
            pipe.zadd(
                self.keys.redbeat_schedule, {key: int(next_run(job, last or now, self.interval, self.tz).timestamp())}
            )
            if len(pipe) >= 3 * BATCH:
                pipe.execute()
                pipe = r.pipeline(transaction=False)
        gone = [k for k in existing if k not in desired]
        if gone and any(not p.event for p in bad):
            # An app's hooks failed to import (say, mid-deploy): keep its entries and their phase.
            gone = []
        for chunk in _chunks(gone, BATCH):
            pipe.zrem(self.keys.redbeat_schedule, *chunk)
            pipe.delete(*chunk)
        stats.removed = len(gone)
        if problems != self._problems:
            for problem in problems:
                logger.error("Scheduled job not scheduled: %s", problem)
            pipe.set(self.keys.scheduler_problems, json.dumps(problems))
            self._problems = problems
        if len(pipe):
            pipe.execute()
        self.desired = desired
        self._reconciled = True
        self._last_reconcile = time.monotonic()
        stats.entries = len(desired)
        stats.problems = problems
        if stats.added or stats.changed or stats.removed:
            logger.info(
                "Schedule reconciled: %d entries (%d added, %d changed, %d removed) for %d sites",
                stats.entries,
                stats.added,
                stats.changed,
                stats.removed,
                len(sites),
            )
        return stats

    # --- lock and heartbeat ---

    def _extend_lock(self, force: bool = False) -> None:
        if not self.lock_key:
            return
        if self.lock is None:
            # RedBeat's beat_init handler failed to take the lock: never run unlocked.
            raise RuntimeError("beat: the scheduler lock is not held")
        if force or time.monotonic() - self._last_extend > self.max_interval:
            self.lock.extend(int(self.lock_timeout))
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
        return max(10, int(3 * self.max_interval + 0.999))


def _chunks(items: list[str], size: int) -> Iterable[list[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _stat(path: Any) -> tuple[int, int]:
    try:
        st = os.stat(path)
    except OSError:
        return (0, 0)
    return (st.st_mtime_ns, st.st_size)


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
