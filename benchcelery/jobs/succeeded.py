"""The jobs a worker ran successfully, summarised in its tally (tally.py) until it is written.

A succeeded job is counted in the duration histogram (durations.py) and the history
(history.py). The commands that count it depend on a few values only: its queue, method label
and site, the minutes it started and ended in, its run-time and wait-time buckets; and they add
up its run time and wait time and keep its hour's longest run. So the tally keeps a count per
such group, with those sums, and durations.py and history.py build the commands of each group
when the tally is drained (at most once a second): the commands of every job one by one, summed,
for a fraction of the work per job.

The writes sent at most once a minute per key (a histogram's last-written time and expiry, the
history's EXPIREATs) are still decided by the job that makes them due, with its own time, as
before; a group asks again only from the time one of its keys can be due (throttle.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from benchcelery.jobs import durations, history
from benchcelery.jobs.durations import bucket, label, touch, waited
from benchcelery.jobs.history import retention
from benchcelery.jobs.throttle import Throttle

if TYPE_CHECKING:
    from benchcelery.bench.keys import Keys

Command = tuple[Any, ...]
# (key prefix, queue, method label, site, minute, started minute, run bucket, wait bucket): site and
# minutes are None when the history does not count the job; the wait bucket when its wait is unknown.
Group = tuple[str, str, str, str | None, int | None, int | None, int, int | None]


class _Seconds:
    """The run seconds of one (prefix, queue, method label), summed job after job as the per-job
    HINCRBYFLOATs were, whatever the group (so the same float to the last bit)."""

    __slots__ = ("keys", "total")

    def __init__(self, keys: Keys) -> None:
        self.keys, self.total = keys, 0.0


class _Jobs:
    """One group's jobs: how many, their summed wait (ms) and longest run; when its keys' once-a-
    minute commands can be due again (and the throttles' generation then)."""

    __slots__ = ("due", "generation", "jobs", "keys", "longest", "seconds", "wait_ms")

    def __init__(self, keys: Keys, seconds: _Seconds, due: float) -> None:
        self.keys, self.seconds, self.due, self.generation = keys, seconds, due, Throttle.generation
        self.jobs, self.wait_ms, self.longest = 0, 0, -1.0


class Commands:
    """Collects the pipeline calls of durations.py as raw commands."""

    def __init__(self) -> None:
        self.list: list[Command] = []

    def hincrby(self, key: str, field: str, amount: int) -> None:
        self.list.append(("HINCRBY", key, field, amount))

    def hincrbyfloat(self, key: str, field: str, amount: float) -> None:
        self.list.append(("HINCRBYFLOAT", key, field, repr(float(amount))))

    def hset(self, key: str, field: str, value: int) -> None:
        self.list.append(("HSET", key, field, value))

    def expire(self, key: str, seconds: int) -> None:
        self.list.append(("EXPIRE", key, seconds))


class Succeeded:
    """Succeeded jobs by group, until drained (``commands``). Not thread-safe: the tally's lock."""

    def __init__(self) -> None:
        self.groups: dict[Group, _Jobs] = {}
        self.seconds: dict[tuple[str, str, str], _Seconds] = {}

    def add(
        self, keys: Keys, queue: Any, method: Any, site: Any, enqueued: Any, at: float, runtime: float
    ) -> Sequence[Command]:
        """Count one job that ended at ``at`` after ``runtime`` seconds (``queue``, ``method``,
        ``site``, ``enqueued``: as its message says); the once-a-minute commands it makes due."""
        started = at - runtime
        seconds = at - started  # max(0.0, at - started) as durations.observe and history.finished have it
        seconds = seconds if seconds > 0.0 else 0.0  # (max costs five times this)
        counted = retention().enabled
        wait = waited(started, enqueued) if counted else None
        wait_bucket = None if wait is None else bucket(wait)
        wait_ms = 0 if wait is None else round(wait * 1000)
        queue, method, run_bucket = str(queue or "default"), label(method), bucket(seconds)
        if counted and (wait is not None or not enqueued):  # history.finished skips an enqueued_at that is no number
            site, minute, started_minute = str(site or "?"), int(at) // 60, int(started) // 60
            group: Group = (keys.prefix, queue, method, site, minute, started_minute, run_bucket, wait_bucket)
        else:
            group = (keys.prefix, queue, method, None, None, None, run_bucket, wait_bucket)
        jobs = self.groups.get(group)
        due: Sequence[Command] = ()
        if jobs is None or at >= jobs.due or jobs.generation != Throttle.generation:
            jobs, due = self._throttled(keys, group, jobs, at)
        jobs.jobs += 1
        jobs.seconds.total += round(seconds, 6)
        jobs.wait_ms += wait_ms
        if seconds > jobs.longest:
            jobs.longest = seconds
        return due

    def _throttled(self, keys: Keys, group: Group, jobs: _Jobs | None, at: float) -> tuple[_Jobs, list[Command]]:
        """``group``'s jobs (new when None) with the time from which one of its keys' once-a-minute
        commands can be due again, and those due at ``at``."""
        prefix, queue, method, _, minute, started_minute, _, _ = group
        pipe = Commands()
        until = touch(pipe, keys.durations(queue), method, at)
        if minute is not None and started_minute is not None:
            until = min(until, history.expire(pipe.list, keys, minute, started_minute, at))
        if jobs is None:
            seconds = self.seconds.get((prefix, queue, method))
            if seconds is None:
                seconds = self.seconds[(prefix, queue, method)] = _Seconds(keys)
            jobs = self.groups[group] = _Jobs(keys, seconds, until)
        else:
            jobs.due, jobs.generation = until, Throttle.generation
        return jobs, pipe.list

    def commands(self) -> list[Command]:
        """The commands of every job counted, summed per group (durations.py and history.py build them)."""
        pipe = Commands()
        longest: dict[tuple[str, tuple[str, str, str], int], list[Any]] = {}  # (prefix, series, hour) -> [keys, run]
        for (prefix, queue, method, site, minute, started_minute, run_bucket, wait_bucket), jobs in self.groups.items():
            keys = jobs.keys
            durations.add(pipe, keys.durations(queue), method, jobs.jobs, run_bucket, wait_bucket, jobs.wait_ms)
            if site is None or minute is None or started_minute is None:
                continue
            series = (site, queue, method)
            history.ran(pipe.list, keys, series, minute, started_minute, jobs.jobs, run_bucket, wait_bucket)
            top = longest.setdefault((prefix, series, minute // 60), [keys, -1.0])
            top[1] = max(top[1], jobs.longest)
        for (_, queue, method), seconds in self.seconds.items():
            durations.add_seconds(pipe, seconds.keys.durations(queue), method, seconds.total)
        for (_, series, hour), (keys, run) in longest.items():
            history.longest(pipe.list, keys, series, hour, run)
        return pipe.list
