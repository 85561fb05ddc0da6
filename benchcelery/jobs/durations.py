"""Job-duration histograms, kept in Redis by the workers and exported by ``bench metrics``.

Per queue a hash ``durations:<queue>`` (keys.py): ``<method>\\x1f<i>`` counts the jobs whose run
time fell in bucket ``i`` (not cumulative; ``i = len(BUCKETS)`` is +Inf) and ``<method>\\x1fsum`` the
seconds they took. A job adds two HINCRBY-style commands to a pipeline its worker sends anyway.
"""

from __future__ import annotations

import bisect
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from benchcelery.bench.keys import Keys

# Upper bounds in seconds: from quick jobs to the long queue's default two hours.
BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0)
SEP = "\x1f"
SUM = "sum"


def observe(pipe: Any, keys: Keys, meta: dict[str, Any], now: float | None = None) -> None:
    """Add one finished job (``meta`` has ``method``, ``queue``, ``started_at``) to ``pipe``.

    Adds commands only; the caller executes the pipeline with its own bookkeeping.
    """
    started = meta.get("started_at")
    if not started:
        return
    seconds = max(0.0, (time.time() if now is None else now) - float(started))
    key = keys.durations(str(meta.get("queue") or "default"))
    method = str(meta.get("method") or "?")
    pipe.hincrby(key, f"{method}{SEP}{bisect.bisect_left(BUCKETS, seconds)}", 1)
    pipe.hincrbyfloat(key, f"{method}{SEP}{SUM}", round(seconds, 6))


def record(r: Any, keys: Keys, meta: dict[str, Any]) -> None:
    """``observe`` in a pipeline of its own (one round trip)."""
    pipe = r.pipeline(transaction=False)
    observe(pipe, keys, meta)
    pipe.execute()
