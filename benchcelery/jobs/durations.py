"""Job-duration histograms, kept in Redis by the workers and exported by ``bench metrics``.

Per queue a hash ``durations:<queue>`` (keys.py): ``<method>\\x1f<i>`` counts the jobs whose run
time fell in bucket ``i`` (not cumulative; ``i = len(BUCKETS)`` is +Inf) and ``<method>\\x1fsum`` the
seconds they took, ``<method>\x1flast`` when it was last written; ``<method>\x1fw<i>`` and
``<method>\x1fwms`` (milliseconds) the same for the time the job waited in its queue (enqueue ->
start), when its message says when it was enqueued. A job adds these commands to a pipeline its
worker sends anyway (a worker first sums those of its succeeded jobs for up to a second:
tally.py); ``last`` and the hash's EXPIRE (``durations_ttl``) at most once a minute per process
and method.

Bounded: a method that is not of an installed app or the allowlist (a forged or refused message)
is counted under the one label ``[refused]``, so forged names cannot add series; a method not
written for ``durations_ttl`` seconds is left out of the export, and a queue's hash expires when
no job of it ran for that long.
"""

from __future__ import annotations

import bisect
import functools
import time
from typing import TYPE_CHECKING, Any

from benchcelery.jobs.throttle import Throttle

if TYPE_CHECKING:
    from benchcelery.bench.keys import Keys

# Upper bounds in seconds: from quick jobs to the long queue's default two hours.
BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0)
SEP = "\x1f"
SUM = "sum"
WAIT = "w"  # prefix of the wait-time fields (``<method>\x1fw<i>``)
WAIT_MS = "wms"  # total wait of the method's jobs, in milliseconds (an integer: HINCRBY, not HINCRBYFLOAT)
_touched = Throttle(60, 1024)  # (hash, method) whose LAST this process wrote in the last minute
LAST = "last"
REFUSED = "[refused]"
DEFAULT_TTL = 7 * 24 * 3600


_labels: dict[str, tuple[float, str]] = {}  # method -> (monotonic time it was decided, label)
LABEL_EVERY = 1.0  # s: a method's label is decided again this often (apps.txt and the allowlist may change)


def label(method: object) -> str:
    """The histogram's label for ``method``: itself when an installed app or the allowlist could
    run it (by name; nothing is imported), else ``[refused]``. Decided at most once a second per
    method (a worker labels every job it finishes, twice)."""
    if not isinstance(method, str):
        return REFUSED
    now = time.monotonic()
    hit = _labels.get(method)
    if hit is not None and now - hit[0] < LABEL_EVERY:
        return hit[1]
    if len(_labels) > 1024:
        _labels.clear()
    decided = _label(method)
    _labels[method] = (now, decided)
    return decided


def _label(method: str) -> str:
    from benchcelery.errors import BenchError
    from benchcelery.jobs.methods import check_allowed
    from benchcelery.runtime import get_runtime

    try:
        rt = get_runtime()
        check_allowed(method, rt.apps(), rt.allowed_methods())
    except BenchError:
        return REFUSED
    except Exception:  # no runtime here: the name alone decides
        return method if len(method) <= 200 and method.replace(".", "").replace("_", "").isalnum() else REFUSED
    return method


def ttl() -> int:
    from benchcelery.runtime import get_runtime

    try:
        return int(get_runtime().settings.get("durations_ttl") or DEFAULT_TTL)
    except Exception:
        return DEFAULT_TTL


def observe(pipe: Any, keys: Keys, meta: dict[str, Any], now: float | None = None, waits: bool = False) -> None:
    """Add one finished job (``meta`` has ``method``, ``queue``, ``started_at``) to ``pipe``; with
    ``waits`` (the job history is on) its wait time too, when ``meta`` has ``enqueued_at``.

    Adds commands only; the caller executes the pipeline with its own bookkeeping.
    """
    started = meta.get("started_at")
    if not started:
        return
    try:
        at = time.time() if now is None else now
        seconds = max(0.0, at - float(started))
    except (TypeError, ValueError, OverflowError):
        return
    wait = waited(started, meta.get("enqueued_at")) if waits else None
    wait_ms = 0 if wait is None else round(wait * 1000)
    key, method = keys.durations(str(meta.get("queue") or "default")), label(meta.get("method"))
    add(pipe, key, method, 1, bucket(seconds), None if wait is None else bucket(wait), wait_ms)
    add_seconds(pipe, key, method, round(seconds, 6))
    touch(pipe, key, method, at)


# The histogram bucket of a duration in seconds (``len(BUCKETS)``: +Inf).
bucket = functools.partial(bisect.bisect_left, BUCKETS)


def waited(started: Any, enqueued: Any) -> float | None:
    """Seconds from the job's enqueue to its start, when both are known."""
    try:
        if not (enqueued and started):
            return None
        wait = float(started) - float(enqueued)
    except (TypeError, ValueError, OverflowError):
        return None
    return wait if wait > 0.0 else 0.0  # max(0.0, wait) (NaN too) for a fifth of its cost: once per job


def add(pipe: Any, key: str, method: str, n: int, run_bucket: int, wait_bucket: int | None, wait_ms: int) -> None:
    """Count ``n`` jobs of ``method`` in one run-time bucket and, when their wait is known, one
    wait-time bucket (``wait_ms``: their waits summed, in milliseconds)."""
    pipe.hincrby(key, f"{method}{SEP}{run_bucket}", n)
    if wait_bucket is not None:
        pipe.hincrby(key, f"{method}{SEP}{WAIT}{wait_bucket}", n)
        pipe.hincrby(key, f"{method}{SEP}{WAIT_MS}", wait_ms)


def add_seconds(pipe: Any, key: str, method: str, seconds: float) -> None:
    """Add to the run time of ``method``'s jobs (each job's rounded to the microsecond)."""
    pipe.hincrbyfloat(key, f"{method}{SEP}{SUM}", seconds)


def touch(pipe: Any, key: str, method: str, at: float) -> float:
    """When ``method`` was last written and the hash's expiry: once a minute per process is
    precise enough. Returns a time before which this writes nothing again (throttle.py)."""
    if _touched.ready((key, method), at):
        pipe.hset(key, f"{method}{SEP}{LAST}", int(at))
        pipe.expire(key, ttl())
    return _touched.due((key, method))
