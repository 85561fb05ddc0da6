"""Job history in Redis: counters per minute and per hour, and per-method histograms.

What a job adds rides in writes its worker or producer sends anyway (no round trip of its own):
the enqueue's MULTI (bulk.py) counts it enqueued; the worker's ack write (request.py, sent with
the next poll by broker/acks.py) counts it started and done, with its run-time and wait-time
(enqueue -> start) buckets, summed with its other jobs of the last second (tally.py: a SIGKILL
loses up to that second); a failure's record (failures.py) counts it failed. Key names and
field layouts are in bench/keys.py (``hist:*``).

Bounded: every key is per epoch hour or day and expires (``EXPIREAT``, sent at most once a
minute per key and process): the minute counters and hourly method histograms after
``history_minutes_ttl``, the rolled-up hourly counters and daily method histograms after
``history_hours_ttl``. One process rolls each finished hour up (``roll_pending``, guarded by a
SET NX marker): a worker checks once a minute at most, in its own write path.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from benchcelery.jobs.durations import bucket, label
from benchcelery.jobs.throttle import Throttle

if TYPE_CHECKING:
    from benchcelery.bench.keys import Keys

SEP = "\x1f"
ENQUEUED, STARTED, DONE, FAILED, RETRIED = "e", "s", "d", "f", "r"
KINDS = (ENQUEUED, STARTED, DONE, FAILED, RETRIED)
# A job that started and ended in the same minute (most do) is one field: started + done (x) or
# started + failed (y), one command instead of two.
COMBINED = {"x": (STARTED, DONE), "y": (STARTED, FAILED)}


def expand(kind: str) -> tuple[str, ...]:
    """The counters a field's kind adds to (none for an unknown kind or a wait bucket)."""
    if kind in KINDS:
        return (kind,)
    return COMBINED.get(kind, ())


RUN, WAIT = "d", "w"  # method histogram fields: run time, wait time (+ the bucket index)
ROLL_AFTER = 300  # s after an hour ends before it is rolled up (late acks of that hour land first)
MARKER_TTL = 3 * 24 * 3600
_EXPIRE_EVERY = 60  # s between two EXPIREATs of one key from one process


@dataclass(frozen=True)
class Retention:
    enabled: bool = True
    minutes: int = 24 * 3600
    hours: int = 30 * 24 * 3600


_retention: Retention | None = None
_expired = Throttle(_EXPIRE_EVERY, 256)  # keys whose EXPIREAT this process sent in the last minute
_longest: dict[tuple[str, str], float] = {}  # (zset, series) -> the longest run this process sent there
_next_roll = 0.0
generation = 0  # counts configure() calls: commands built under older settings are stale


def retention() -> Retention:
    """This process's history settings (read once from the runtime's settings)."""
    global _retention
    if _retention is None:
        from benchcelery.runtime import get_runtime

        try:
            s = get_runtime().settings
            _retention = Retention(
                bool(s.get("history_enabled", True)), s.number("history_minutes_ttl"), s.number("history_hours_ttl")
            )
        except Exception:
            _retention = Retention()
    return _retention


def configure(value: Retention | None) -> None:
    """Set (or with None, forget) this process's settings; tests and benchmarks switch history off."""
    global _retention, generation
    _retention = value
    generation += 1
    _expired.clear()
    _longest.clear()


def _expire_at(commands: list[tuple[Any, ...]], key: str, at: int, now: float) -> float:
    """``EXPIREAT key at``, at most once a minute per key; a time before which it is not sent again."""
    if _expired.ready(key, now):
        commands.append(("EXPIREAT", key, at))
    return _expired.due(key)


def count(
    commands: list[tuple[Any, ...]],
    keys: Keys,
    kind: str,
    site: str,
    queue: str,
    at: float,
    n: int = 1,
    now: float = 0.0,
) -> None:
    """Add ``n`` jobs of ``kind`` at time ``at`` to the minute counters (and to the hourly ones
    when that hour was already rolled up: a long job's start)."""
    now = now or time.time()
    minute = int(at) // 60
    _count(commands, keys, kind, site, queue, minute, n, int(now) // 60)
    _expire_count(commands, keys, minute, now)


def _count(
    commands: list[tuple[Any, ...]], keys: Keys, kind: str, site: str, queue: str, minute: int, n: int, now_minute: int
) -> None:
    """The counters of ``count`` at ``minute``, written in the minute ``now_minute``."""
    hour = minute // 60
    commands.append(("HINCRBY", keys.hist_minutes(hour), f"{minute}{SEP}{site}{SEP}{queue}{SEP}{kind}", n))
    if _rolled(hour, now_minute):
        commands.append(("HINCRBY", keys.hist_hours(hour // 24), f"{hour}{SEP}{site}{SEP}{queue}{SEP}{kind}", n))


def _expire_count(commands: list[tuple[Any, ...]], keys: Keys, minute: int, now: float) -> float:
    """The expiries of the keys ``_count`` writes; a time before which none is sent again."""
    ret = retention()
    hour = minute // 60
    due = _expire_at(commands, keys.hist_minutes(hour), (hour + 1) * 3600 + ret.minutes, now)
    if _rolled(hour, int(now) // 60):
        day = hour // 24
        due = min(due, _expire_at(commands, keys.hist_hours(day), (day + 1) * 86400 + ret.hours, now))
    return due


def _rolled(hour: int, now_minute: int) -> bool:
    """Whether ``hour`` was rolled up by the minute ``now_minute``: ``now >= (hour + 1) * 3600 +
    ROLL_AFTER`` for any ``now`` in that minute (ROLL_AFTER is whole minutes)."""
    return now_minute * 60 >= (hour + 1) * 3600 + ROLL_AFTER


def finished(keys: Keys, meta: dict[str, Any], failed: bool, now: float | None = None) -> list[tuple[Any, ...]]:
    """The commands that count one job that ran (``meta``: site, queue, method, started_at,
    enqueued_at): started, done or failed, its run-time and wait-time buckets and its hour's
    longest run. Empty when history is off."""
    if not retention().enabled:
        return []
    at = time.time() if now is None else now
    site, queue = str(meta.get("site") or "?"), str(meta.get("queue") or "default")
    method = label(meta.get("method"))
    try:
        started = float(meta.get("started_at") or at)
        enqueued = float(meta["enqueued_at"]) if meta.get("enqueued_at") else None
    except (TypeError, ValueError, OverflowError):
        return []
    run = max(0.0, at - started)
    wait_bucket = None if enqueued is None else bucket(max(0.0, started - enqueued))
    minute, started_minute = int(at) // 60, int(started) // 60
    series = (site, queue, method)
    commands: list[tuple[Any, ...]] = []
    ran(commands, keys, series, minute, started_minute, 1, bucket(run), wait_bucket, failed)
    longest(commands, keys, series, minute // 60, run)
    expire(commands, keys, minute, started_minute, at)
    return commands


def ran(
    commands: list[tuple[Any, ...]],
    keys: Keys,
    series: tuple[str, str, str],
    minute: int,
    started_minute: int,
    n: int,
    run_bucket: int,
    wait_bucket: int | None,
    failed: bool = False,
) -> None:
    """Count ``n`` jobs of ``series`` (site, queue, method label) that started in ``started_minute``
    and ended in ``minute``: started, done or failed, and their run-time bucket and, when known,
    wait-time bucket. Counters only: ``expire`` sends their keys' expiries."""
    site, queue, method = series
    if started_minute == minute:
        _count(commands, keys, "y" if failed else "x", site, queue, minute, n, minute)
    else:
        _count(commands, keys, STARTED, site, queue, started_minute, n, minute)
        _count(commands, keys, FAILED if failed else DONE, site, queue, minute, n, minute)
    key, name = keys.hist_methods(minute // 60), f"{queue}{SEP}{method}{SEP}{site}"
    commands.append(("HINCRBY", key, f"{name}{SEP}{RUN}{run_bucket}", n))
    if wait_bucket is not None:
        commands.append(("HINCRBY", key, f"{name}{SEP}{WAIT}{wait_bucket}", n))
        # The minute's wait buckets per (site, queue): the overview's live wait-time chart.
        field = f"{started_minute}{SEP}{site}{SEP}{queue}{SEP}{WAIT}{wait_bucket}"
        commands.append(("HINCRBY", keys.hist_minutes(started_minute // 60), field, n))
    if failed:
        commands.append(("HINCRBY", key, f"{name}{SEP}{FAILED}", n))


def longest(commands: list[tuple[Any, ...]], keys: Keys, series: tuple[str, str, str], hour: int, run: float) -> None:
    """The hour's longest run of ``series`` (site, queue, method label), when longer than any this
    process sent there (ZADD GT keeps the largest of every process's)."""
    site, queue, method = series
    top, name = keys.hist_max(hour), f"{queue}{SEP}{method}{SEP}{site}"
    if run > _longest.get((top, name), -1.0):
        if len(_longest) > 4096:
            _longest.clear()
        _longest[(top, name)] = run
        commands.append(("ZADD", top, "GT", round(run, 6), name))


def expire(commands: list[tuple[Any, ...]], keys: Keys, minute: int, started_minute: int, now: float) -> float:
    """The expiries of the keys ``ran`` and ``longest`` write (each at most once a minute); a
    time before which none of them is sent again."""
    due = _expire_count(commands, keys, minute, now)
    if started_minute != minute:
        due = min(due, _expire_count(commands, keys, started_minute, now))
    hour = minute // 60
    until = (hour + 1) * 3600 + retention().minutes
    for key in (keys.hist_methods(hour), keys.hist_max(hour)):
        due = min(due, _expire_at(commands, key, until, now))
    return due


def simple(keys: Keys, kind: str, site: str, queue: str, n: int = 1, now: float | None = None) -> list[tuple[Any, ...]]:
    """The commands that count ``n`` jobs of ``kind`` (enqueued, retried) now; empty when history is off."""
    if not retention().enabled:
        return []
    at = time.time() if now is None else now
    commands: list[tuple[Any, ...]] = []
    count(commands, keys, kind, site, queue, at, n, now=at)
    return commands


def due(now: float | None = None) -> bool:
    """Whether this process should look for hours to roll up (at most once a minute)."""
    global _next_roll
    at = time.time() if now is None else now
    if at < _next_roll:
        return False
    _next_roll = at + 60
    return True


def roll_pending(r: Any, keys: Keys, now: float | None = None) -> list[int]:
    """Roll up every finished hour of the last day that no process rolled yet; the hours rolled here."""
    at = time.time() if now is None else now
    last = (int(at) - ROLL_AFTER) // 3600 - 1  # the newest hour that ended ROLL_AFTER ago
    hours = list(range(last - 23, last + 1))
    pipe = r.pipeline(transaction=False)
    for hour in hours:
        pipe.set(keys.hist_rolled(hour), 1, nx=True, ex=MARKER_TTL)
    won = [hour for hour, ok in zip(hours, pipe.execute(), strict=True) if ok]
    for hour in won:
        roll_hour(r, keys, hour)
    return won


def roll_hour(r: Any, keys: Keys, hour: int) -> None:
    """Add one hour's minute counters to its day's hourly counters, its method histograms and
    longest runs to its day's."""
    ret = retention()
    day = hour // 24
    until = (day + 1) * 86400 + ret.hours
    minutes, methods = (
        r.pipeline(transaction=False).hgetall(keys.hist_minutes(hour)).hgetall(keys.hist_methods(hour)).execute()
    )
    sums: dict[str, int] = {}
    for field, value in minutes.items():
        parts = _text(field).split(SEP)
        for kind in expand(parts[3]) if len(parts) == 4 else ():
            name = SEP.join([str(hour), parts[1], parts[2], kind])
            sums[name] = sums.get(name, 0) + int(value)
    pipe = r.pipeline(transaction=False)
    for name, n in sums.items():
        pipe.hincrby(keys.hist_hours(day), name, n)
    for field, value in methods.items():
        pipe.hincrby(keys.hist_methods_daily(day), _text(field), int(value))
    pipe.zunionstore(keys.hist_max_daily(day), [keys.hist_max_daily(day), keys.hist_max(hour)], aggregate="MAX")
    for key in (keys.hist_hours(day), keys.hist_methods_daily(day), keys.hist_max_daily(day)):
        pipe.expireat(key, until)
    pipe.execute()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
