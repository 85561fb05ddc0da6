"""Reading the job history (written by jobs/history.py): per-minute throughput and wait time,
hourly counts, and per-method statistics over a window.

``live`` is the one read the dashboard's stream makes (a pipeline of two HGETALLs: this hour's and
the last hour's minute counters). Method statistics have hour resolution: the ``hour`` window is
the clock hours that overlap the last 60 minutes, ``day`` the last 24 clock hours (their hourly
keys), ``month`` the last 30 days (daily keys, plus the recent hours not rolled up yet).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from benchcelery.bench.keys import Keys
from benchcelery.jobs.durations import BUCKETS
from benchcelery.jobs.history import DONE, ENQUEUED, FAILED, KINDS, RETRIED, RUN, SEP, STARTED, WAIT, expand

WINDOWS = {"hour": 3600, "day": 86400, "month": 30 * 86400}
N_BUCKETS = len(BUCKETS) + 1  # the last is +Inf


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass
class Minute:
    """One minute (epoch minute) of counts, and its wait-time buckets."""

    minute: int
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    wait: list[int] = field(default_factory=lambda: [0] * N_BUCKETS)

    def as_dict(self) -> dict[str, Any]:
        p50, p95 = percentile(self.wait, 0.5), percentile(self.wait, 0.95)
        return {
            "minute": self.minute,
            **{NAMES[k]: v for k, v in self.counts.items()},
            "wait_p50": p50,
            "wait_p95": p95,
        }


NAMES = {ENQUEUED: "enqueued", STARTED: "started", DONE: "done", FAILED: "failed", RETRIED: "retried"}


def percentile(buckets: list[int], q: float, top: float | None = None) -> float | None:
    """The ``q`` quantile of a bucketed histogram, interpolated inside its bucket (as Prometheus'
    histogram_quantile); None when it is empty. ``top``: the largest value seen, a cap."""
    total = sum(buckets)
    if not total:
        return None
    rank, seen = q * total, 0
    for i, n in enumerate(buckets):
        if n and seen + n >= rank:
            low = BUCKETS[i - 1] if i else 0.0
            high = BUCKETS[i] if i < len(BUCKETS) else (top if top is not None else BUCKETS[-1])
            value = low + (high - low) * max(0.0, rank - seen) / n
            return min(value, top) if top is not None else value
        seen += n
    return top


def minute_fields(r: Any, keys: Keys, hours: list[int]) -> list[dict[Any, Any]]:
    pipe = r.pipeline(transaction=False)
    for hour in hours:
        pipe.hgetall(keys.hist_minutes(hour))
    return list(pipe.execute())


def minutes_of(
    raw: list[dict[Any, Any]], start: int, end: int, site: str | None = None, queue: str | None = None
) -> list[Minute]:
    """Epoch minutes ``start``..``end`` (inclusive) from the minute counters, optionally of one site/queue."""
    out = {m: Minute(m) for m in range(start, end + 1)}
    for fields in raw:
        for name, value in fields.items():
            parts = _text(name).split(SEP)
            if len(parts) != 4 or (site and parts[1] != site) or (queue and parts[2] != queue):
                continue
            try:
                row = out.get(int(parts[0]))
                if row is None:
                    continue
                kind = parts[3]
                if expand(kind):
                    for counter in expand(kind):
                        row.counts[counter] += int(value)
                elif kind.startswith(WAIT) and kind[1:].isdigit() and int(kind[1:]) < N_BUCKETS:
                    row.wait[int(kind[1:])] += int(value)
            except ValueError:
                continue
    return [out[m] for m in sorted(out)]


def live(r: Any, keys: Keys, now: float | None = None, minutes: int = 60) -> tuple[list[dict[Any, Any]], int]:
    """The raw minute counters of the last ``minutes`` (one round trip) and the current epoch minute."""
    at = int(time.time() if now is None else now)
    last = at // 60
    hours = list(range((last - minutes + 1) * 60 // 3600, at // 3600 + 1))
    return minute_fields(r, keys, hours), last


def last_minutes(
    r: Any, keys: Keys, minutes: int = 60, site: str | None = None, queue: str | None = None, now: float | None = None
) -> list[Minute]:
    raw, last = live(r, keys, now, minutes)
    return minutes_of(raw, last - minutes + 1, last, site, queue)


@dataclass
class MethodStats:
    queue: str
    method: str
    count: int = 0
    failed: int = 0
    run: list[int] = field(default_factory=lambda: [0] * N_BUCKETS)
    wait: list[int] = field(default_factory=lambda: [0] * N_BUCKETS)
    max: float | None = None

    @property
    def failure_rate(self) -> float:
        return self.failed / self.count if self.count else 0.0

    @property
    def p50(self) -> float | None:
        return percentile(self.run, 0.5, self.max)

    @property
    def p95(self) -> float | None:
        return percentile(self.run, 0.95, self.max)

    @property
    def wait_p95(self) -> float | None:
        return percentile(self.wait, 0.95)

    def as_dict(self) -> dict[str, Any]:
        return {
            "queue": self.queue,
            "method": self.method,
            "count": self.count,
            "failed": self.failed,
            "failure_rate": round(self.failure_rate, 4),
            "p50": self.p50,
            "p95": self.p95,
            "max": self.max,
            "wait_p95": self.wait_p95,
            "histogram": dict(zip([*map(str, BUCKETS), "+Inf"], self.run, strict=True)),
        }


def _window_keys(r: Any, keys: Keys, window: str, at: int) -> tuple[list[str], list[str]]:
    """(histogram hashes, longest-run zsets) that cover ``window`` ending at ``at``."""
    hour = at // 3600
    if window == "hour":
        hours = sorted({(at - 3600) // 3600, hour})
        return [keys.hist_methods(h) for h in hours], [keys.hist_max(h) for h in hours]
    if window == "day":
        hours = list(range(hour - 23, hour + 1))
        return [keys.hist_methods(h) for h in hours], [keys.hist_max(h) for h in hours]
    days = list(range(at // 86400 - 29, at // 86400 + 1))
    recent = list(range(hour - 25, hour + 1))
    rolled = r.mget([keys.hist_rolled(h) for h in recent])
    open_hours = [h for h, mark in zip(recent, rolled, strict=True) if not mark]
    return (
        [keys.hist_methods_daily(d) for d in days] + [keys.hist_methods(h) for h in open_hours],
        [keys.hist_max_daily(d) for d in days] + [keys.hist_max(h) for h in open_hours],
    )


def method_stats(
    r: Any,
    keys: Keys,
    window: str = "hour",
    site: str | None = None,
    queue: str | None = None,
    now: float | None = None,
) -> list[MethodStats]:
    """Per (queue, method): count, failures, run-time and wait-time histograms, longest run, over ``window``."""
    at = int(time.time() if now is None else now)
    hashes, zsets = _window_keys(r, keys, window, at)
    pipe = r.pipeline(transaction=False)
    for key in hashes:
        pipe.hgetall(key)
    for key in zsets:
        pipe.zrange(key, 0, -1, withscores=True)
    replies = pipe.execute()
    stats: dict[tuple[str, str], MethodStats] = {}
    for fields in replies[: len(hashes)]:
        for name, value in fields.items():
            parts = _text(name).split(SEP)
            if len(parts) != 4 or (site and parts[2] != site) or (queue and parts[0] != queue):
                continue
            row = stats.setdefault((parts[0], parts[1]), MethodStats(parts[0], parts[1]))
            _add(row, parts[3], int(value))
    for members in replies[len(hashes) :]:
        for member, score in members:
            parts = _text(member).split(SEP)
            top = stats.get((parts[0], parts[1])) if len(parts) == 3 else None
            if top and (not site or parts[2] == site):
                top.max = max(top.max or 0.0, float(score))
    return sorted(stats.values(), key=lambda s: (-s.count, s.queue, s.method))


def _add(row: MethodStats, kind: str, n: int) -> None:
    if kind == FAILED:
        row.failed += n
        return
    index = int(kind[1:]) if kind[1:].isdigit() else -1
    if not 0 <= index < N_BUCKETS:
        return
    if kind[0] == RUN:
        row.run[index] += n
        row.count += n
    elif kind[0] == WAIT:
        row.wait[index] += n


def hourly(
    r: Any, keys: Keys, hours: int = 24, site: str | None = None, queue: str | None = None, now: float | None = None
) -> list[tuple[int, dict[str, int]]]:
    """Counts per epoch hour for the last ``hours``: rolled-up hours from the daily keys, the
    others summed from their minute counters."""
    at = int(time.time() if now is None else now)
    last = at // 3600
    span = list(range(last - hours + 1, last + 1))
    rolled = r.mget([keys.hist_rolled(h) for h in span])
    days = sorted({h // 24 for h, mark in zip(span, rolled, strict=True) if mark})
    open_hours = [h for h, mark in zip(span, rolled, strict=True) if not mark and h >= last - 25]
    pipe = r.pipeline(transaction=False)
    for day in days:
        pipe.hgetall(keys.hist_hours(day))
    for hour in open_hours:
        pipe.hgetall(keys.hist_minutes(hour))
    replies = pipe.execute()
    out = {h: dict.fromkeys(KINDS, 0) for h in span}
    marked = {h for h, mark in zip(span, rolled, strict=True) if mark}
    for fields in replies[: len(days)]:
        _sum_into(out, fields, site, queue, lambda stamp: stamp if stamp in marked else None)
    for fields in replies[len(days) :]:
        _sum_into(out, fields, site, queue, lambda stamp: stamp // 60)
    return [(h, {NAMES[k]: v for k, v in out[h].items()}) for h in span]


def _sum_into(
    out: dict[int, dict[str, int]], fields: dict[Any, Any], site: str | None, queue: str | None, to_hour: Any
) -> None:
    for name, value in fields.items():
        parts = _text(name).split(SEP)
        if len(parts) != 4 or not expand(parts[3]) or (site and parts[1] != site) or (queue and parts[2] != queue):
            continue
        hour = to_hour(int(parts[0])) if parts[0].isdigit() else None
        if hour in out:
            for kind in expand(parts[3]):
                out[hour][kind] += int(value)


def footprint(r: Any, keys: Keys) -> dict[str, int]:
    """Bytes Redis uses for each history key (MEMORY USAGE), for the benchmarks and doctor."""
    out = {}
    for key in r.scan_iter(match=f"{keys.prefix}hist:*", count=1000):
        out[_text(key)] = int(r.memory_usage(key, samples=0) or 0)
    return out
