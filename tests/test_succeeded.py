"""A worker's succeeded jobs counted by group (jobs/succeeded.py) write exactly what their per-job
commands did: the same commands at every write of the tally, the same Redis contents after.

The reference is the per-job construction as it was before the groups (``durations.observe`` and
``history.finished`` of commit 625a3f7, kept here with their own once-a-minute state), summed by
the tally as before. Failures (never summed) run between the successes, in both worlds, through
the reference and through today's ``durations.observe`` and ``history.finished``.
"""

from __future__ import annotations

import bisect
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchcelery.bench.keys import Keys
from benchcelery.jobs import durations, history
from benchcelery.jobs.durations import BUCKETS, label, ttl
from benchcelery.jobs.history import DONE, FAILED, ROLL_AFTER, RUN, SEP, STARTED, WAIT, retention
from benchcelery.jobs.succeeded import Command, Commands
from benchcelery.jobs.tally import Tally
from tests.conftest import RedisServer

# --- the reference: the per-job commands of 625a3f7, with their own once-a-minute state -------------
_touched: dict[tuple[str, str], float] = {}
_expired: dict[str, float] = {}
_longest: dict[tuple[str, str], float] = {}


def _forget() -> None:
    _touched.clear()
    _expired.clear()
    _longest.clear()


def _old_observe(pipe: Any, keys: Keys, meta: dict[str, Any], now: float, waits: bool) -> None:
    started = meta.get("started_at")
    if not started:
        return
    try:
        at = now
        seconds = max(0.0, at - float(started))
    except (TypeError, ValueError, OverflowError):
        return
    key = keys.durations(str(meta.get("queue") or "default"))
    method = label(meta.get("method"))
    pipe.hincrby(key, f"{method}{SEP}{bisect.bisect_left(BUCKETS, seconds)}", 1)
    pipe.hincrbyfloat(key, f"{method}{SEP}sum", round(seconds, 6))
    wait = _old_wait(meta) if waits else None
    if wait is not None:
        pipe.hincrby(key, f"{method}{SEP}w{bisect.bisect_left(BUCKETS, wait)}", 1)
        pipe.hincrby(key, f"{method}{SEP}wms", round(wait * 1000))
    if at - _touched.get((key, method), 0.0) >= 60:
        if len(_touched) > 1024:
            _touched.clear()
        _touched[(key, method)] = at
        pipe.hset(key, f"{method}{SEP}last", int(at))
        pipe.expire(key, ttl())


def _old_wait(meta: dict[str, Any]) -> float | None:
    try:
        enqueued, started = meta.get("enqueued_at"), meta.get("started_at")
        return max(0.0, float(started) - float(enqueued)) if enqueued and started else None
    except (TypeError, ValueError, OverflowError):
        return None


def _old_expire_at(commands: list[Command], key: str, at: int, now: float) -> None:
    if now - _expired.get(key, 0.0) >= 60:
        if len(_expired) > 256:
            _expired.clear()
        _expired[key] = now
        commands.append(("EXPIREAT", key, at))


def _old_count(commands: list[Command], keys: Keys, kind: str, site: str, queue: str, at: float, now: float) -> None:
    ret = retention()
    hour, minute = int(at) // 3600, int(at) // 60
    key = keys.hist_minutes(hour)
    commands.append(("HINCRBY", key, f"{minute}{SEP}{site}{SEP}{queue}{SEP}{kind}", 1))
    _old_expire_at(commands, key, (hour + 1) * 3600 + ret.minutes, now)
    if now >= (hour + 1) * 3600 + ROLL_AFTER:
        day = hour // 24
        daily = keys.hist_hours(day)
        commands.append(("HINCRBY", daily, f"{hour}{SEP}{site}{SEP}{queue}{SEP}{kind}", 1))
        _old_expire_at(commands, daily, (day + 1) * 86400 + ret.hours, now)


def _old_finished(keys: Keys, meta: dict[str, Any], failed: bool, now: float) -> list[Command]:
    if not retention().enabled:
        return []
    at = now
    site, queue = str(meta.get("site") or "?"), str(meta.get("queue") or "default")
    method = label(meta.get("method"))
    try:
        started = float(meta.get("started_at") or at)
        enqueued = float(meta["enqueued_at"]) if meta.get("enqueued_at") else None
    except (TypeError, ValueError, OverflowError):
        return []
    commands: list[Command] = []
    if int(started) // 60 == int(at) // 60:
        _old_count(commands, keys, "y" if failed else "x", site, queue, at, now=at)
    else:
        _old_count(commands, keys, STARTED, site, queue, started, now=at)
        _old_count(commands, keys, FAILED if failed else DONE, site, queue, at, now=at)
    hour = int(at) // 3600
    key, top = keys.hist_methods(hour), keys.hist_max(hour)
    series = f"{queue}{SEP}{method}{SEP}{site}"
    run = max(0.0, at - started)
    commands.append(("HINCRBY", key, f"{series}{SEP}{RUN}{bisect.bisect_left(BUCKETS, run)}", 1))
    if enqueued is not None:
        wait = max(0.0, started - enqueued)
        commands.append(("HINCRBY", key, f"{series}{SEP}{WAIT}{bisect.bisect_left(BUCKETS, wait)}", 1))
        field = f"{int(started) // 60}{SEP}{site}{SEP}{queue}{SEP}{WAIT}{bisect.bisect_left(BUCKETS, wait)}"
        commands.append(("HINCRBY", keys.hist_minutes(int(started) // 3600), field, 1))
    if failed:
        commands.append(("HINCRBY", key, f"{series}{SEP}{FAILED}", 1))
    if run > _longest.get((top, series), -1.0):
        if len(_longest) > 4096:
            _longest.clear()
        _longest[(top, series)] = run
        commands.append(("ZADD", top, "GT", round(run, 6), series))
    ret = retention()
    _old_expire_at(commands, key, (hour + 1) * 3600 + ret.minutes, at)
    _old_expire_at(commands, top, (hour + 1) * 3600 + ret.minutes, at)
    return commands


# --- the jobs ------------------------------------------------------------------------------------
@dataclass
class Wait:
    seconds: float  # from its enqueue to its start


@dataclass
class Job:
    gap: float  # seconds after the previous job ended
    runtime: float
    queue: Any
    method: Any
    site: Any
    enqueued: Any  # a Wait, or what the message says as it is (none, garbage, out of range)
    failed: bool  # a failure (recorded at once, not summed)
    write: bool  # the tally is written after this job


_bounds = st.sampled_from([0.0, *BUCKETS, 59.9995, 60.0, 299.99, 300.0, 600.0, 3600.0])
_seconds = st.floats(0, 1.0) | st.floats(0, 120.0) | st.floats(0, 9000.0) | _bounds
_raw = st.sampled_from([None, 0, "", "not a number", "12.5", float("nan"), -1e308, 10**400, "-1e308"])
jobs = st.builds(
    Job,
    gap=st.sampled_from([0.0, 0.0004, 0.3, 1.0, 29.5, 59.9995, 60.0, 60.0005, 61.0, 1800.0]) | st.floats(0, 90.0),
    runtime=_seconds,
    queue=st.sampled_from(["short", "default", "long", "", None]),
    method=st.sampled_from(["testapp.tasks.noop", "testapp.tasks.sleep", "os.system('x')", None, ""]),
    site=st.sampled_from(["site1.local", "site2.local", "", None]),
    enqueued=_seconds.map(Wait) | _raw,
    failed=st.integers(0, 5).map(lambda i: i == 0),
    write=st.booleans(),
)


def _meta(job: Job, at: float) -> dict[str, Any]:
    started = at - job.runtime
    enqueued = started - job.enqueued.seconds if isinstance(job.enqueued, Wait) else job.enqueued
    return {"method": job.method, "queue": job.queue, "site": job.site, "enqueued_at": enqueued, "started_at": started}


def _or_none(build: Callable[..., Any], *args: Any) -> Any:
    """``build(*args)``; None when it raises as it may for an absurd enqueued_at (an overflowing
    wait), where the worker logs a warning and counts nothing of the job."""
    try:
        return build(*args)
    except OverflowError:
        return None


def _failure_old(keys: Keys, meta: dict[str, Any], at: float) -> list[Command]:
    pipe = Commands()
    _old_observe(pipe, keys, meta, now=at, waits=retention().enabled)
    return pipe.list + _old_finished(keys, meta, failed=True, now=at)


def _success_old(keys: Keys, meta: dict[str, Any], at: float, history_on: bool) -> list[Command]:
    pipe = Commands()
    _old_observe(pipe, keys, meta, now=at, waits=history_on)
    return pipe.list + _old_finished(keys, meta, failed=False, now=at)


def _failure_new(keys: Keys, meta: dict[str, Any], at: float) -> list[Command]:
    pipe = Commands()
    durations.observe(pipe, keys, meta, now=at, waits=retention().enabled)
    return pipe.list + history.finished(keys, meta, failed=True, now=at)


class World:
    """One prefix's Redis contents, written as a worker would: summed successes at each write of
    its tally, failures at once."""

    def __init__(self, r: Any, name: str) -> None:
        self.r, self.prefix, self.tally = r, f"bc:{name}{uuid.uuid4().hex[:8]}:", Tally()
        self.keys = Keys.from_prefix(self.prefix)
        self.writes: list[Counter[Command]] = []  # what each write sent, prefix left out

    def send(self, commands: list[Command]) -> None:
        pipe = self.r.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        pipe.execute(raise_on_error=False)  # a NaN or infinite HINCRBYFLOAT is refused in both worlds
        self.writes.append(Counter(tuple(_short(p, self.prefix) for p in c) for c in commands))

    def contents(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in self.r.scan_iter(match=f"{self.prefix}*"):
            kind = self.r.type(name).decode()
            value: Any = self.r.hgetall(name) if kind == "hash" else self.r.zrange(name, 0, -1, withscores=True)
            expires = self.r.expiretime(name)  # EXPIREAT: to the second; EXPIRE (durations): within the test
            out[_short(name.decode(), self.prefix)] = (kind, value, expires if b":hist:" in name else expires > 0)
        return out


def _no_zadd(sent: Counter[Command]) -> Counter[Command]:
    return Counter({command: n for command, n in sent.items() if command[0] != "ZADD"})


def _short(part: Any, prefix: str) -> Any:
    return part.removeprefix(prefix) if isinstance(part, str) else part


def _run(r: Any, batch: list[Job], start: float, history_on: bool) -> tuple[World, World]:
    """The jobs through the reference (summed by a tally as before) and through today's tally."""
    old, new = World(r, "old"), World(r, "new")
    durations._touched.clear()
    history.configure(history.Retention(enabled=history_on))  # forgets its EXPIREATs and longest runs
    _forget()
    at = start
    for job in batch:
        at += job.gap
        _job(old, new, job, at, history_on)
        if job.write or job is batch[-1]:
            for world in (old, new):
                world.send(world.tally.drain())
    return old, new


def _job(old: World, new: World, job: Job, at: float, history_on: bool) -> None:
    """One job that ended at ``at``, in both worlds: a failure sent at once, a success summed."""
    meta = _meta(job, at)
    if job.failed:
        sent = _or_none(_failure_old, old.keys, meta, at), _or_none(_failure_new, new.keys, meta, at)
        assert (sent[0] is None) == (sent[1] is None)
        if sent[0] is not None:
            old.send(sent[0])
            new.send(sent[1])
        return
    summed = _or_none(_success_old, old.keys, meta, at, history_on)
    if summed is not None:
        old.tally.add(summed)
    added = _or_none(new.tally.add_job, new.keys, job.queue, job.method, job.site, meta["enqueued_at"], at, job.runtime)
    assert (summed is None) == (added is None)


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    batch=st.lists(jobs, min_size=1, max_size=60),
    # Near an hour's end, and in the minute its roll-up is due (ROLL_AFTER after it ended).
    offset=st.floats(0, 7200.0) | st.sampled_from([0.0, 59.9999, 3599.9999, 3600.0, 3600 - 1e-7, 3900.0, 3959.99]),
    history_on=st.booleans(),
)
def test_jobs_counted_by_group_write_what_their_commands_did(
    redis_server: RedisServer, batch: list[Job], offset: float, history_on: bool
) -> None:
    r = redis_server.client()
    hour = int(time.time()) // 3600
    old, new = _run(r, batch, (hour - 2) * 3600 + offset, history_on)  # keys expire an hour after theirs
    try:
        # The same commands at every write (in any order). A failure's ZADD GT may go where a
        # success's went (the success's longest run is sent with the tally's write, not before
        # the failure's): the same largest run in Redis all the same (compared below).
        if any(job.failed for job in batch):
            assert [_no_zadd(w) for w in new.writes] == [_no_zadd(w) for w in old.writes]
        else:
            assert new.writes == old.writes
        before, after = old.contents(), new.contents()
        assert before.keys() == after.keys()
        for name, (kind, value, expires) in before.items():
            assert after[name][0] == kind and after[name][2] == expires, name
            if kind == "hash":  # sums equal to 1e-6 (they are equal strings: checked with the writes)
                floats = {f for f in value if f.endswith(b"sum")}
                assert {f: v for f, v in value.items() if f not in floats} == {
                    f: v for f, v in after[name][1].items() if f not in floats
                }, name
                assert all(abs(float(value[f]) - float(after[name][1][f])) <= 1e-6 for f in floats), name
            else:
                assert value == after[name][1], name
    finally:
        for world in (old, new):
            names = list(r.scan_iter(match=f"{world.prefix}*"))
            if names:
                r.delete(*names)
        history.configure(None)
        durations._touched.clear()


def test_a_group_asks_its_throttles_again_only_when_a_key_can_be_due(monkeypatch: Any) -> None:
    """Most jobs of a group make no once-a-minute command due and ask no throttle; a forgotten
    throttle (full, or the settings changed) is asked at the group's next job."""
    asked: list[float] = []
    expire = history.expire
    monkeypatch.setattr(history, "expire", lambda *a: asked.append(a[-1]) or expire(*a))
    history.configure(history.Retention())
    durations._touched.clear()
    try:
        tally, keys, at = Tally(), Keys.from_prefix("bc:groups:"), 1_000_000.5
        for i in range(100):
            tally.add_job(keys, "short", "testapp.tasks.noop", "site1.local", at + i * 0.01 - 1, at + i * 0.01, 0.002)
        assert len(tally.jobs.groups) == 1 and len(tally.sets) == 1 and len(tally.expiries) == 4 and asked == [at]
        (group,) = tally.jobs.groups.values()
        assert group.jobs == 100 and at + 59 < group.due <= at + 60
        history.configure(history.Retention())  # forgets the EXPIREATs sent: asked at the next job
        tally.add_job(keys, "short", "testapp.tasks.noop", "site1.local", at + 0.5, at + 1.5, 0.002)
        # The next minute: a new group; its keys' writes are due from ``at + 60`` on, not before.
        tally.add_job(keys, "short", "testapp.tasks.noop", "site1.local", at + 58.9, at + 59.9, 0.002)
        tally.add_job(keys, "short", "testapp.tasks.noop", "site1.local", at + 58.99, at + 59.99, 0.002)
        tally.add_job(keys, "short", "testapp.tasks.noop", "site1.local", at + 59, at + 60, 0.002)
        assert len(tally.jobs.groups) == 2 and asked == [at, at + 1.5, at + 59.9, at + 60]
        drained = tally.drain()
        assert [c[0] for c in drained].count("EXPIREAT") == 3
        last = f"{durations.label('testapp.tasks.noop')}\x1flast"
        assert [c for c in drained if c[0] == "HSET"] == [("HSET", keys.durations("short"), last, int(at + 60))]
    finally:
        history.configure(None)
        durations._touched.clear()
