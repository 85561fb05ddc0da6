"""The scheduler: due-time rules (pure), and real `bench schedule` + `bench worker` processes on a real Redis.

Short intervals come from config (``scheduler_interval`` 1 s = the period of ``all`` jobs,
``scheduler_tick_interval`` 1 s). Waits use deadlines; a check that something does *not* happen
waits for a positive control (another site keeps running) instead of a bare sleep.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo

from benchcelery.jobs.inspect import iter_pending
from benchcelery.scheduler.events import ScheduledJob, is_due, next_run, parse_scheduler_events
from benchcelery.scheduler.state import state_from_config
from tests.conftest import TESTS, BenchHandle, wait_until

SITE1, SITE2 = "site1.local", "site2.local"


# --- helpers ---


def install_schedapp(bench: BenchHandle, events: dict[str, Any], **config: Any) -> None:
    """Install tests/apps/schedapp with these scheduler_events (instead of jobs_demo's)."""
    target = bench.root / "apps" / "schedapp"
    if not target.exists():
        shutil.copytree(TESTS / "apps" / "schedapp", target, ignore=shutil.ignore_patterns("__pycache__"))
    write_hooks(bench, events)
    (bench.root / "sites" / "apps.txt").write_text("testapp\nschedapp\n")
    bench.set_config(**{"scheduler_interval": 1, "scheduler_tick_interval": 1, **config})


def write_hooks(bench: BenchHandle, events: dict[str, Any]) -> None:
    path = bench.root / "apps" / "schedapp" / "hooks.py"
    path.write_text(f"scheduler_events = {events!r}\n")


def runs(bench: BenchHandle, site: str | None = None, what: str | None = None) -> list[dict[str, Any]]:
    raw = bench.redis.lrange(f"test:sched:{bench.bench.bench_id}", 0, -1)
    items = [json.loads(v) for v in raw]
    return [i for i in items if (site is None or i["site"] == site) and (what is None or i["what"] == what)]


def wait_runs(
    bench: BenchHandle, site: str, count: int, after: float = 0.0, what: str = "tick", timeout: float = 30
) -> list[dict[str, Any]]:
    def enough() -> list[dict[str, Any]] | None:
        found = [r for r in runs(bench, site, what) if r["t"] > after]
        return found if len(found) >= count else None

    return wait_until(enough, timeout, 0.1, what=f"{count} {what} runs of {site} after {after}")


def wait_more(bench: BenchHandle, site: str, count: int, what: str = "tick", timeout: float = 30) -> None:
    """Wait until ``site`` has ``count`` more runs than now."""
    start = len(runs(bench, site, what))
    wait_until(
        lambda: len(runs(bench, site, what)) >= start + count, timeout, 0.1, what=f"{count} more {what} runs of {site}"
    )


def heartbeat(bench: BenchHandle) -> dict[str, Any] | None:
    raw = bench.redis.get(f"{bench.prefix}scheduler:heartbeat")
    return json.loads(raw) if raw else None


def entry_names(bench: BenchHandle) -> set[str]:
    prefix = f"{bench.prefix}redbeat:"
    return {k.decode()[len(prefix) :] for k in bench.redis.zrange(f"{prefix}:schedule", 0, -1)}


def ok(result: Any) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return str(result.stdout)


def start_scheduler(bench: BenchHandle) -> Any:
    proc = bench.start("schedule")
    wait_until(
        lambda: heartbeat(bench) and heartbeat(bench)["pid"] == proc.pid,
        30,
        0.1,  # type: ignore[index]
        what="the scheduler's first tick",
    )
    return proc


# --- due-time rules, mirroring Frappe's test_scheduled_job_type.py ---


def job(event: str, cron: str | None) -> ScheduledJob:
    return ScheduledJob("app", event, "app.tasks.job", cron)


def due(j: ScheduledJob, last: datetime, now: datetime, tz: Any = UTC, interval: float = 240) -> bool:
    return is_due(j, last, now, interval, tz)


def test_daily_job_due_at_next_midnight() -> None:
    daily = job("daily", "0 0 * * *")
    last = datetime(2019, 1, 1, 0, 0, tzinfo=UTC)
    assert due(daily, last, datetime(2019, 1, 2, 0, 0, 6, tzinfo=UTC))
    assert not due(daily, last, datetime(2019, 1, 1, 0, 0, 6, tzinfo=UTC))
    assert not due(daily, last, datetime(2019, 1, 1, 23, 59, 59, tzinfo=UTC))


def test_weekly_job_due_on_sunday() -> None:
    weekly = job("weekly_long", "0 0 * * 0")
    assert weekly.queue == "long"
    last = datetime(2019, 1, 1, tzinfo=UTC)  # a Tuesday
    assert due(weekly, last, datetime(2019, 1, 6, 0, 0, 1, tzinfo=UTC))
    assert not due(weekly, last, datetime(2019, 1, 2, tzinfo=UTC))
    assert not due(weekly, last, datetime(2019, 1, 5, 23, 59, 59, tzinfo=UTC))


def test_monthly_job_due_on_the_first() -> None:
    monthly = job("monthly", "0 0 1 * *")
    last = datetime(2019, 1, 1, tzinfo=UTC)
    assert due(monthly, last, datetime(2019, 2, 1, 0, 0, 1, tzinfo=UTC))
    assert not due(monthly, last, datetime(2019, 1, 15, tzinfo=UTC))
    assert not due(monthly, last, datetime(2019, 1, 31, 23, 59, 59, tzinfo=UTC))


def test_cron_job_frappe_syntax() -> None:
    cron = job("cron", "0/15 * * * *")
    last = datetime(2019, 1, 1, 0, 0, tzinfo=UTC)
    assert next_run(cron, last, 240, UTC) == datetime(2019, 1, 1, 0, 15, tzinfo=UTC)
    assert due(cron, last, datetime(2019, 1, 1, 0, 15, 1, tzinfo=UTC))
    assert not due(cron, last, datetime(2019, 1, 1, 0, 5, 6, tzinfo=UTC))
    assert not due(cron, last, datetime(2019, 1, 1, 0, 14, 59, tzinfo=UTC))


def test_cold_start_waits_for_the_next_slot() -> None:
    daily = job("daily", "0 0 * * *")
    created = datetime(2019, 1, 1, 10, 0, tzinfo=UTC)  # a new job's "last run" is its creation
    assert not due(daily, created, datetime(2019, 1, 1, 11, 59, 30, tzinfo=UTC))
    assert due(daily, created, datetime(2019, 1, 2, 0, 0, 30, tzinfo=UTC))
    every = job("all", None)
    assert not due(every, created, created + timedelta(seconds=239), interval=240)
    assert due(every, created, created + timedelta(seconds=240), interval=240)


def test_cron_runs_in_the_bench_time_zone() -> None:
    daily = job("daily", "0 0 * * *")
    kolkata = ZoneInfo("Asia/Kolkata")  # UTC+5:30: local midnight is 18:30 UTC
    last = datetime(2019, 1, 1, 12, 0, tzinfo=UTC)
    assert next_run(daily, last, 240, kolkata) == datetime(2019, 1, 1, 18, 30, tzinfo=UTC)
    assert not due(daily, last, datetime(2019, 1, 1, 18, 29, 59, tzinfo=UTC), kolkata)
    assert due(daily, last, datetime(2019, 1, 1, 18, 30, 1, tzinfo=UTC), kolkata)


def test_hooks_to_jobs_queues_and_problems() -> None:
    jobs, problems = parse_scheduler_events(
        "app",
        {
            "all": ["app.a"],
            "hourly_long": ["app.b"],
            "daily": "app.c",
            "cron": {"*/5 * * * *": ["app.d"], "not a cron": ["app.bad"]},
            "cron_long": {"0 2 * * *": ["app.e"]},
            "dailly": ["app.typo"],
        },
    )
    found = {(j.event, j.method, j.cron, j.queue) for j in jobs}
    assert found == {
        ("all", "app.a", None, "default"),
        ("hourly_long", "app.b", "0 * * * *", "long"),
        ("daily", "app.c", "0 0 * * *", "default"),
        ("cron", "app.d", "*/5 * * * *", "default"),
        ("cron_long", "app.e", "0 2 * * *", "long"),
    }
    assert {(p.app, p.method) for p in problems} == {("app", "app.bad"), ("app", "app.typo")}
    assert all(j.job_id == f"scheduled_job::{j.method}" for j in jobs)


def test_site_state_from_frappe_keys() -> None:
    assert state_from_config("s", {}).state == "enabled"  # no key: enabled (documented choice)
    assert state_from_config("s", {"enable_scheduler": 0}).state == "disabled"
    assert state_from_config("s", {"enable_scheduler": "0"}).state == "disabled"
    paused = state_from_config("s", {"pause_scheduler": True})
    assert (paused.state, paused.active, paused.reasons) == (
        "paused",
        False,
        ("paused (pause_scheduler is set; bench scheduler resume resumes it)",),
    )
    assert state_from_config("s", {"pause_scheduler": False}).active
    maintenance = state_from_config("s", {"maintenance_mode": "1"})
    assert maintenance.state == "disabled" and maintenance.reasons == ("Maintenance mode is ON",)
    assert state_from_config("s", {"disable_scheduler": 1}).state == "disabled"


# --- real processes ---


def test_site_states_gate_runs_without_replay(bench: BenchHandle) -> None:
    install_schedapp(bench, {"all": ["schedapp.tasks.tick"]})
    bench.start("worker")
    start_scheduler(bench)
    wait_runs(bench, SITE1, 2)

    # pause -> site1 gets nothing while site2 keeps running; resume -> runs again, no burst
    out = ok(bench.run("--site", SITE1, "scheduler", "pause"))
    assert out.strip() == f"Scheduler is paused for site {SITE1}"
    assert bench.bench.site_config(SITE1)["pause_scheduler"] is True
    wait_more(bench, SITE2, 2)  # lets a run of site1 already queued finish
    settled = len(runs(bench, SITE1))
    wait_more(bench, SITE2, 3)  # ~3 slots site1 misses
    assert len(runs(bench, SITE1)) == settled

    out = ok(bench.run("--site", SITE1, "scheduler", "resume"))
    assert out.strip() == f"Scheduler is resumed for site {SITE1}"
    resumed_at = time.time()
    wait_more(bench, SITE2, 3)
    after = sorted(r["t"] for r in runs(bench, SITE1) if r["t"] > resumed_at)
    assert 1 <= len(after) <= 4, after
    assert all(b - a > 0.5 for a, b in pairwise(after)), f"burst of missed runs: {after}"

    # disable / enable (Frappe's commands and messages)
    assert ok(bench.run("--site", SITE1, "disable-scheduler")).strip() == f"Disabled for {SITE1}"
    wait_more(bench, SITE2, 2)
    count = len(runs(bench, SITE1))
    wait_more(bench, SITE2, 2)
    assert len(runs(bench, SITE1)) == count
    assert ok(bench.run("--site", SITE1, "enable-scheduler")).strip() == f"Enabled for {SITE1}"
    wait_runs(bench, SITE1, 1, after=time.time())

    # maintenance mode, and a hand edit of site_config.json is picked up the same way
    assert (
        ok(bench.run("--site", SITE1, "set-maintenance-mode", "on")).strip()
        == f"Maintenance mode is on for site {SITE1}"
    )
    status = json.loads(ok(bench.run("--site", SITE1, "scheduler", "status", "--format", "json")))
    assert status["status"] == "disabled" and status["reasons"] == ["Maintenance mode is ON"]
    wait_more(bench, SITE2, 2)
    count = len(runs(bench, SITE1))
    wait_more(bench, SITE2, 2)
    assert len(runs(bench, SITE1)) == count
    conf_path = bench.bench.site_config_file(SITE1)
    conf = json.loads(conf_path.read_text())
    conf["maintenance_mode"] = 0
    conf_path.write_text(json.dumps(conf))
    wait_runs(bench, SITE1, 1, after=time.time())


def test_no_pile_up_while_a_run_is_going(bench: BenchHandle) -> None:
    install_schedapp(bench, {"all": ["schedapp.tasks.slow"]})
    bench.set_config(SITE2, enable_scheduler=0)
    bench.start("worker")
    beat = start_scheduler(bench)
    wait_runs(bench, SITE1, 1, what="slow-start")
    # Several slots pass while the first run is still going: no second run queued or started.
    first_tick = time.time()
    wait_until(lambda: heartbeat(bench)["last_tick"] > first_tick + 3, 20, 0.1)  # type: ignore[index]
    assert len(runs(bench, SITE1, "slow-start")) == 1
    status = json.loads(ok(bench.run("--site", SITE1, "scheduler", "status", "-f", "json")))
    assert status["pending_events"] == 0  # running, not pending
    assert bench.output(beat).count("Skipped queueing schedapp.tasks.slow for site1.local") == 1  # once
    bench.redis.set(f"test:release:{bench.bench.bench_id}", 1)
    wait_runs(bench, SITE1, 2, what="slow-start")  # the next slot runs again once it finished
    assert runs(bench, SITE2) == []  # disabled site


def test_hooks_change_picked_up_without_restart(bench: BenchHandle) -> None:
    install_schedapp(bench, {"daily": ["schedapp.tasks.daily_a"]}, time_zone="Asia/Kolkata")
    start_scheduler(bench)  # no worker: queued runs stay pending
    wait_until(
        lambda: entry_names(bench) == {f"{s}::daily::schedapp.tasks.daily_a" for s in (SITE1, SITE2)},
        20,
        0.1,
        what="daily entries",
    )
    write_hooks(
        bench,
        {
            "all": ["schedapp.tasks.tick"],
            "cron": {"*/5 * * * *": ["schedapp.tasks.cron_job"], "61 * * * *": ["schedapp.tasks.other"]},
            "hourly": ["schedapp.tasks.missing"],
        },
    )
    expected = {
        f"{s}::{name}"
        for s in (SITE1, SITE2)
        for name in ("all::schedapp.tasks.tick", "cron::schedapp.tasks.cron_job::*/5 * * * *")
    }
    wait_until(lambda: entry_names(bench) == expected, 20, 0.1, what="entries after the hooks change")

    bench.bench.new_site("site3.local")  # a new site gets every job
    wait_until(lambda: "site3.local::all::schedapp.tasks.tick" in entry_names(bench), 20, 0.1)

    # `all` fires (1 s) but nothing consumes: exactly one pending run per site, however many slots pass
    wait_until(
        lambda: json.loads(ok(bench.run("--site", SITE1, "scheduler", "status", "-f", "json")))["pending_events"] == 1,
        20,
        0.2,
    )
    ticked = time.time()
    wait_until(lambda: heartbeat(bench)["last_tick"] > ticked + 2, 20, 0.1)  # type: ignore[index]
    verbose = ok(bench.run("--site", SITE1, "scheduler", "status", "--verbose"))
    assert "Pending events: 1" in verbose
    assert "Scheduler process: running" in verbose
    assert "cron */5 * * * *" in verbose and "schedapp.tasks.cron_job" in verbose
    assert "times in Asia/Kolkata" in verbose
    problems = [line for line in verbose.splitlines() if line.startswith("Problem:")]
    assert any("61 * * * *" in p and "schedapp: cron schedapp.tasks.other" in p for p in problems), problems
    assert any("schedapp" in p and "schedapp.tasks.missing" in p for p in problems), problems
    pending = [j for j in iter_pending(bench.redis, bench.rt().keys, "default", SITE1)]
    assert [(j.method, j.event, j.id) for j in pending] == [
        ("schedapp.tasks.tick", "all", f"{SITE1}::scheduled_job::schedapp.tasks.tick")
    ]


def test_standby_takes_over_without_double_firing(bench: BenchHandle) -> None:
    install_schedapp(bench, {"all": ["schedapp.tasks.tick"]}, scheduler_interval=2)
    bench.set_config(SITE2, enable_scheduler=0)
    bench.start("worker")
    first = start_scheduler(bench)
    second = bench.start("schedule")
    wait_runs(bench, SITE1, 2)
    assert heartbeat(bench)["pid"] == first.pid  # type: ignore[index]
    os.killpg(first.pid, signal.SIGKILL)
    wait_until(lambda: (heartbeat(bench) or {}).get("pid") == second.pid, 60, 0.2, what="the standby's tick")
    wait_runs(bench, SITE1, 2, after=time.time())
    # Every slot fired once: runs are at least about one interval apart, across both schedulers.
    times = sorted(r["t"] for r in runs(bench, SITE1))
    gaps = [b - a for a, b in pairwise(times)]
    assert min(gaps) > 1.0, gaps
    assert "Acquired lock" in bench.output(second)


def test_trigger_event_and_status(bench: BenchHandle) -> None:
    install_schedapp(
        bench,
        {
            "all": ["schedapp.tasks.tick"],
            "daily": ["schedapp.tasks.daily_a", "schedapp.tasks.boom"],
            "daily_long": ["schedapp.tasks.daily_long"],
            "hourly": ["schedapp.tasks.hourly"],
            "cron": {"0 3 * * *": ["schedapp.tasks.cron_job"]},
        },
    )
    out = ok(bench.run("--site", SITE1, "trigger-scheduler-event", "daily"))
    assert out.splitlines() == [
        f"Enqueued schedapp.tasks.daily_a (daily, queue default) for {SITE1}",
        f"Enqueued schedapp.tasks.boom (daily, queue default) for {SITE1}",
    ]
    keys = bench.rt().keys
    pending = [j for q in ("default", "long") for j in iter_pending(bench.redis, keys, q)]
    assert sorted((j.site, j.method, j.event) for j in pending) == [
        (SITE1, "schedapp.tasks.boom", "daily"),
        (SITE1, "schedapp.tasks.daily_a", "daily"),
    ]
    again = ok(bench.run("--site", SITE1, "trigger-scheduler-event", "daily"))
    assert again.count("Skipped") == 2  # still queued: never twice
    out = ok(bench.run("--site", SITE1, "trigger-scheduler-event", "daily_long"))
    assert out.strip() == f"Enqueued schedapp.tasks.daily_long (daily_long, queue long) for {SITE1}"
    out = ok(bench.run("--site", SITE2, "trigger-scheduler-event", "schedapp.tasks.hourly"))  # Frappe's form
    assert out.strip() == f"Enqueued schedapp.tasks.hourly (hourly, queue default) for {SITE2}"
    assert (
        ok(bench.run("--site", SITE1, "trigger-scheduler-event", "weekly")).strip()
        == "No scheduled jobs for event weekly"
    )
    bad = bench.run("--site", SITE1, "trigger-scheduler-event", "nonsense")
    assert (bad.returncode, bad.stderr.strip(), bad.stdout) == (1, "Event nonsense does not exist!", "")
    assert bench.run("trigger-scheduler-event", "daily").stderr.strip() == "Please specify --site sitename"

    text = ok(bench.run("--site", SITE1, "scheduler", "status"))
    assert text.splitlines() == ["Scheduler: enabled", "Last executed: never", "Pending events: 3", "Failed jobs: 0"]
    ok(bench.run("worker", "--burst", timeout=90))
    text = ok(bench.run("--site", SITE1, "scheduler", "status"))
    lines = text.splitlines()
    assert lines[0] == "Scheduler: enabled" and lines[2:] == ["Pending events: 0", "Failed jobs: 1"]
    data = json.loads(ok(bench.run("--site", SITE1, "scheduler", "status", "--format", "json")))
    assert set(data) >= {
        "site",
        "status",
        "active",
        "reasons",
        "last_executed",
        "pending_events",
        "failed_jobs",
        "scheduler",
        "jobs",
        "problems",
    }
    summary = (data["site"], data["status"], data["pending_events"], data["failed_jobs"])
    assert summary == (SITE1, "enabled", 0, 1)
    by_method = {j["method"]: j for j in data["jobs"]}
    assert by_method["schedapp.tasks.boom"]["last_outcome"] == "failed"
    assert "scheduled job failed on purpose" in by_method["schedapp.tasks.boom"]["last_error"]
    assert by_method["schedapp.tasks.daily_a"]["last_outcome"] == "ok"
    assert by_method["schedapp.tasks.hourly"]["last_outcome"] is None  # ran on site2 only
    assert by_method["schedapp.tasks.daily_long"]["queue"] == "long"

    # state changes: text and Frappe's JSON, --site all
    assert ok(bench.run("--site", "all", "scheduler", "pause")).splitlines() == [
        f"Scheduler is paused for site {SITE1}",
        f"Scheduler is paused for site {SITE2}",
    ]
    assert json.loads(ok(bench.run("--site", SITE2, "scheduler", "resume", "-f", "json"))) == {
        "status": "resumed",
        "site": SITE2,
    }
    both = json.loads(ok(bench.run("--site", "all", "scheduler", "status", "-f", "json")))
    assert [(s["site"], s["status"]) for s in both] == [(SITE1, "paused"), (SITE2, "enabled")]
    verbose = ok(bench.run("scheduler", "status", "--site", SITE1, "--verbose"))
    assert "Inactive: paused (pause_scheduler is set; bench scheduler resume resumes it)" in verbose
    assert "Scheduler process: not running" in verbose


def test_one_tick_cost_and_redbeat_entries(bench: BenchHandle) -> None:
    """The benchmark's entry point (``make_scheduler(rt).run_tick()``) and RedBeat-compatible entries."""
    import sys

    from benchcelery.scheduler.beat import make_scheduler
    from benchcelery.scheduler.schedules import CronSchedule, Entry

    for name in [m for m in sys.modules if m == "schedapp" or m.startswith("schedapp.")]:
        del sys.modules[name]  # another bench's copy may be imported in this process
    install_schedapp(
        bench,
        {"all": ["schedapp.tasks.tick"], "cron": {f"{i} 3 * * *": ["schedapp.tasks.cron_job"] for i in range(19)}},
        time_zone="Asia/Kolkata",
    )
    for i in range(98):
        bench.bench.new_site(f"s{i:03d}.local")
    scheduler = make_scheduler(bench.rt())
    first = scheduler.run_tick()
    assert first.reconciled and len(entry_names(bench)) == 100 * 20 and first.due == 0
    idle = min((scheduler.run_tick() for _ in range(3)), key=lambda s: s.seconds)
    assert not idle.reconciled and idle.due == 0  # its duration: benchmarks/scheduler.py (500 sites)
    assert heartbeat(bench)["entries"] == 2000  # type: ignore[index]

    app = scheduler.app
    key = f"{bench.prefix}redbeat:{SITE1}::cron::schedapp.tasks.cron_job::0 3 * * *"
    entry = Entry.from_key(key, app=app)
    assert isinstance(entry.schedule, CronSchedule) and entry.schedule.tz_name == "Asia/Kolkata"
    assert entry.options["headers"] == {"site": SITE1, "event": "cron", "method": "schedapp.tasks.cron_job"}
    assert entry.score == int(bench.redis.zscore(f"{bench.prefix}redbeat::schedule", key))
    due_local = datetime.fromtimestamp(entry.score, ZoneInfo("Asia/Kolkata"))
    assert (due_local.hour, due_local.minute) == (3, 0)
