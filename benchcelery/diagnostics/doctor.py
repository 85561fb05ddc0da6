"""``bench doctor``: the health of each site's jobs, the workers, the scheduler, Redis and the database.

Data only (``doctor_report`` returns a DoctorReport); it ends with the problems found, and the
command exits 0 without problems, 1 with problems, 69 when Redis is unreachable.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from benchcelery.bench.config import Settings
from benchcelery.diagnostics.database import DatabaseStatus, check_database
from benchcelery.diagnostics.figures import orphaned_jobs, queue_figures, stuck_jobs
from benchcelery.diagnostics.sentinel import SentinelHealth, sentinel_health
from benchcelery.diagnostics.sentinel import render_text as render_sentinel
from benchcelery.diagnostics.workers import WorkerInfo, ago, read_workers
from benchcelery.jobs import inspect, registry
from benchcelery.jobs.site_pause import paused_sites

if TYPE_CHECKING:
    import redis

    from benchcelery.runtime import Runtime


@dataclass
class SiteHealth:
    site: str
    status: str  # active / maintenance
    scheduler: str  # enabled / disabled / paused
    scheduler_reasons: list[str]
    last_run: float | None
    workers: dict[str, int]  # queue -> live worker processes serving it
    pending: dict[str, int]
    started: dict[str, int]
    failed: int
    database: DatabaseStatus
    stuck: list[dict[str, Any]] = field(default_factory=list)
    # jobs whose worker is gone (lease lapsed), waiting for the next recovery sweep
    orphaned: list[dict[str, Any]] = field(default_factory=list)
    recovered: int = 0  # jobs put back in their queue after their worker died (since ever)
    oldest_age: dict[str, float | None] = field(default_factory=dict)  # queue -> oldest waiting job's age (s)
    paused: list[str] = field(default_factory=list)  # queues on which this site's jobs are paused


@dataclass
class RedisHealth:
    connected: bool
    url: str
    version: str = ""
    used_memory: str = ""
    maxmemory_policy: str = ""
    persistence: str = ""  # aof / rdb / none; "" when CONFIG was refused and AOF is off
    info_permitted: bool = True  # False: INFO was refused (an ACL user), so memory and policy are unknown
    warnings: list[str] = field(default_factory=list)
    out_of_memory: str = ""  # the finding when Redis is at maxmemory (its writes are refused)


@dataclass
class DoctorReport:
    sites: list[SiteHealth]
    workers: list[WorkerInfo]
    scheduler_alive: bool
    scheduler_heartbeat: dict[str, Any] | None
    redis: RedisHealth
    problems: list[str]
    stale_acks: int = 0  # finishes of jobs whose lease had lapsed (delivery.py)
    lost_acks: int = 0  # finishes of takes Redis had no record of (restarted without its data, ...)
    sentinel: SentinelHealth | None = None  # with a sentinel:// redis_queue (diagnostics/sentinel.py)
    # scheduler_events entries that are never scheduled (an unknown event type, a bad cron expression)
    hooks_warnings: list[str] = field(default_factory=list)
    paused: list[str] = field(default_factory=list)  # queues paused by `bench queue pause`

    @property
    def healthy(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["healthy"] = self.healthy
        return data


def redis_health(r: redis.Redis, url: str) -> RedisHealth:
    """Version, memory, eviction policy and persistence of the queue Redis. A bench's ACL user may
    run neither INFO nor CONFIG (both @dangerous): the version then comes from HELLO, and what only
    INFO or CONFIG tell is left empty (``info_permitted`` False) rather than guessed."""
    import redis

    health = RedisHealth(connected=True, url=url)
    try:
        info: dict[str, Any] = r.info()
    except redis.exceptions.NoPermissionError:
        health.info_permitted = False
        health.version = _hello_version(r)
        return health
    health.version = str(info.get("redis_version", ""))
    health.used_memory = str(info.get("used_memory_human", ""))
    health.maxmemory_policy = str(info.get("maxmemory_policy", ""))
    save: str | None
    try:
        save = str(r.config_get("save").get("save", ""))
    except Exception:  # CONFIG is an admin command: an ACL user may not run it
        save = None
    if info.get("aof_enabled"):
        health.persistence = "aof"
    elif save is not None:
        health.persistence = "rdb" if save else "none"
    if health.maxmemory_policy and health.maxmemory_policy != "noeviction":
        health.warnings.append(
            f"maxmemory-policy is {health.maxmemory_policy}: Redis may evict queued jobs; use noeviction"
        )
    used, limit = int(info.get("used_memory") or 0), int(info.get("maxmemory") or 0)
    if limit and used >= limit and health.maxmemory_policy == "noeviction":
        health.out_of_memory = (
            f"Redis is out of memory ({info.get('used_memory_human')} used, maxmemory "
            f"{info.get('maxmemory_human')}, noeviction): enqueues and job takes are refused until memory "
            "frees; running jobs keep their leases, finish and record their failures"
        )
    elif limit and used >= 0.9 * limit:
        health.warnings.append(f"Redis uses {used * 100 // limit} % of its maxmemory: at 100 % enqueues are refused")
    if health.persistence == "none":
        health.warnings.append("persistence is off (no AOF, no RDB): queued jobs are lost when Redis restarts")
    return health


def _hello_version(r: redis.Redis) -> str:
    """The server's version from HELLO (a connection command every ACL user may run), or ""."""
    try:
        reply = r.execute_command("HELLO")
    except Exception:  # an old server without HELLO, or a proxy refusing it: the version stays unknown
        return ""
    if isinstance(reply, list):
        reply = dict(zip(reply[::2], reply[1::2], strict=False))
    if not isinstance(reply, dict):
        return ""
    version = reply.get(b"version") or reply.get("version") or ""
    return version.decode() if isinstance(version, bytes) else str(version)


def render_redis(health: RedisHealth) -> str:
    """One line about the queue Redis that states only what is known."""
    head = f"Redis {health.version} at {health.url}" if health.version else f"Redis at {health.url}"
    if not health.info_permitted:
        unknown = "memory, maxmemory-policy and persistence not shown"
        return f"{head}: connected (INFO is not permitted to this ACL user: {unknown})"
    facts = []
    if health.used_memory:
        facts.append(f"{health.used_memory} used")
    if health.maxmemory_policy:
        facts.append(f"maxmemory-policy {health.maxmemory_policy}")
    known = health.persistence
    facts.append(f"persistence {known}" if known else "persistence unknown (CONFIG not permitted)")
    return f"{head}: {', '.join(facts)}"


def scheduler_state(site: str, conf: dict[str, Any]) -> tuple[str, list[str]]:
    from benchcelery.scheduler.state import state_from_config

    state = state_from_config(site, conf)
    return state.state, list(state.reasons)


def doctor_report(rt: Runtime, sites: list[str], check_db: bool = True) -> DoctorReport:
    r, keys, bench = rt.redis, rt.keys, rt.bench
    queues = list(rt.settings.queues)
    now = time.time()
    redis_info = redis_health(r, rt.settings.display_url)
    workers = read_workers(r, keys)
    figures = {f.queue: f for f in queue_figures(rt, now, workers=workers)}  # as show-pending-jobs, metrics
    serving = {q: figures[q].workers for q in queues}
    heartbeat_raw = r.get(keys.scheduler_heartbeat)
    heartbeat = json.loads(heartbeat_raw) if heartbeat_raw else None
    lastruns = {k.decode(): float(v) for k, v in r.hgetall(keys.scheduler_lastrun).items()}
    started_jobs = inspect.started_jobs(r, keys)
    hard_limits = {q.name: q.hard_limit for q in rt.settings.queues.values()}
    paused = paused_sites(r, keys, queues)

    problems: list[str] = [redis_info.out_of_memory] if redis_info.out_of_memory else []
    reports = []
    for site in sites:
        conf = bench.merged_config(site)
        state, reasons = scheduler_state(site, conf)
        mine = [j for j in started_jobs if j.site == site]
        stuck = [{k: v for k, v in job.items() if k != "site"} for job in stuck_jobs(mine, hard_limits, now)]
        orphaned = [{k: v for k, v in job.items() if k != "site"} for job in orphaned_jobs(mine, now)]
        health = SiteHealth(
            site=site,
            status="maintenance" if conf.get("maintenance_mode") else "active",
            scheduler=state,
            scheduler_reasons=reasons,
            last_run=lastruns.get(site),
            workers=serving,
            pending={q: figures[q].pending.get(site, 0) for q in queues},
            started={q: sum(1 for j in mine if j.queue == q) for q in queues},
            failed=sum(figures[q].failed.get(site, 0) for q in queues),
            database=check_database(conf) if check_db else DatabaseStatus("not checked"),
            stuck=stuck,
            orphaned=orphaned,
            recovered=sum(figures[q].recovered.get(site, 0) for q in queues),
            oldest_age={q: figures[q].oldest_age(site) if figures[q].pending.get(site) else None for q in queues},
            paused=[q for q in queues if site in paused.get(q, {})],
        )
        reports.append(health)
        for q, n in health.pending.items():
            if n and not serving[q]:
                problems.append(f"{site}: {n} job{'s' if n != 1 else ''} pending on queue {q} but no worker serves it")
        if state == "enabled" and not reasons and heartbeat is None:
            problems.append(f"{site}: the scheduler is enabled but no `bench schedule` is running")
        for item in stuck:
            problems.append(
                f"{site}: job {item['id']} ({item['method']}) started {item['age']} s ago and is still running "
                "past its time limit"
            )
        for item in orphaned:
            problems.append(
                f"{site}: job {item['id']} ({item['method']}) was taken {item['age']} s ago by a worker that is gone "
                "(its lease lapsed); the next recovery sweep by a live worker or `bench schedule` puts it back"
            )
        if health.database.status == "unreachable":
            problems.append(f"{site}: database unreachable: {health.database.detail}")
    for q in registry.failed_queue_names(r, keys):
        if q not in queues:
            n = int(r.zcard(keys.failed(q)))
            problems.append(
                f"{n} failed record{'s' if n != 1 else ''} in queue {q}, which no config names "
                f"(forged or misrouted messages): see `bench jobs list --state failed`"
            )
    for w in workers:
        idle = w.stuck_for(now)
        if idle is not None:
            problems.append(
                f"Worker stuck: {w.name} (pid {w.pid} on {w.host}): its work loop has not turned for {idle:.0f} s "
                "(blocked, or cut off from Redis); its jobs go back to other workers once their lease lapses"
            )
    ha = sentinel_report(rt.settings)
    return DoctorReport(
        sites=reports,
        workers=workers,
        scheduler_alive=heartbeat is not None,
        scheduler_heartbeat=heartbeat,
        redis=redis_info,
        problems=problems + (ha.problems if ha else []),
        stale_acks=int(r.get(keys.stale_acks) or 0),
        lost_acks=int(r.get(keys.lost_acks) or 0),
        sentinel=ha,
        hooks_warnings=hooks_warnings(rt),
        paused=sorted(q.decode() for q in r.smembers(keys.paused)),
    )


def hooks_warnings(rt: Runtime) -> list[str]:
    """Why entries of the apps' ``scheduler_events`` are not scheduled (as ``bench schedule`` logs
    at start); methods are not imported here."""
    from benchcelery.scheduler.events import load_jobs

    _jobs, problems = load_jobs(rt.apps(), check_methods=False)
    return [f"scheduler_events not scheduled: {p}" for p in problems]


def sentinel_report(settings: Settings) -> SentinelHealth | None:
    from benchcelery.store import durable as ha
    from benchcelery.store import sentinel

    spec = sentinel.spec(settings)
    return sentinel_health(spec, ha.wait_settings(settings.conf)[0]) if spec else None


def render_text(report: DoctorReport) -> str:
    lines: list[str] = []
    for s in report.sites:
        lines += [f"Site: {s.site}", f"Status: {s.status}", "", f"Scheduler: {s.scheduler}"]
        lines += [f"  - {reason}" for reason in s.scheduler_reasons if s.scheduler != "enabled"]
        lines += [f"Last run: {ago(s.last_run)}", "", "Workers:"]
        for q, n in s.workers.items():
            lines.append(
                f"  - {q} queue: {n} worker{'s' if n != 1 else ''} active" if n else f"  - {q} queue: no worker"
            )
        lines += ["", "Queues:"]
        for q, n in s.pending.items():
            running = s.started.get(q, 0)
            age = s.oldest_age.get(q)
            oldest = f" (oldest waiting {age:.0f} s)" if n and age is not None else ""
            paused = " (paused)" if q in report.paused else ""
            held = f" (paused: bench --site {s.site} queue resume {q})" if q in s.paused else ""
            lines.append(
                f"  - {q}{paused}: {n} pending{oldest}" + (f", {running} running" if running else "") + held
            )
        lines += ["", f"Failed jobs: {s.failed}"]
        if s.recovered:
            lines.append(f"Recovered jobs (their worker died): {s.recovered}")
        lines.append("Redis: connected")
        db = s.database
        lines.append(f"Database: {db.status}" + (f" ({db.detail})" if db.status == "unreachable" else ""))
        lines.append("")
    gone = [w for w in report.workers if not w.alive]
    r = report.redis
    lines.append(render_redis(r))
    if report.sentinel:
        lines += render_sentinel(report.sentinel)
    hb = report.scheduler_heartbeat
    if hb:
        lines.append(f"Scheduler process: alive on {hb.get('host', '?')} (pid {hb.get('pid', '?')})")
    else:
        lines.append("Scheduler process: not running")
    for w in gone:
        lines.append(f"Worker gone: {w.name} (last heartbeat {ago(w.last_heartbeat)})")
    warnings = list(r.warnings) + report.hooks_warnings
    if report.stale_acks:
        warnings.append(
            f"{report.stale_acks} job(s) finished on a worker after their lease had lapsed and they were put back "
            "(a stalled worker or a Redis outage longer than job_lease); they may have run twice"
        )
    if report.lost_acks:
        warnings.append(
            f"{report.lost_acks} job(s) finished on a worker when Redis no longer had them in flight: Redis restarted "
            "without its data (they ran once), or their lease lapsed and they already finished elsewhere (twice)"
        )
    warnings += [f"queue {q} is paused: its jobs wait (bench queue resume {q})" for q in report.paused]
    if warnings:
        lines.append("Warnings:")
        lines += [f"  - {w}" for w in warnings]
    if report.problems:
        lines.append("Problems:")
        lines += [f"  - {p}" for p in report.problems]
    else:
        lines.append("No problems found.")
    return "\n".join(lines)
