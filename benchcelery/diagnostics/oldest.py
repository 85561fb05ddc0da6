"""Age of the oldest waiting job, per queue and per site, without scanning whole queues.

kombu LPUSHes new messages on the left of each priority-bucket list and workers take from the
right, so the rightmost element of a bucket (``LINDEX -1``) is its oldest message, and a window
at the right end (``LRANGE -n -1``) holds the oldest ``n``. The queue's oldest job is the one with
the smallest ``enqueued_at`` header among the buckets' rightmost messages (an at_front job in
bucket 0 may be newer than the normal jobs behind it).

Per site, the window answers for every site with a job in it. A site with waiting jobs but none
in the window has only newer ones (further left), so its oldest job is younger than the youngest
message of the window: that age is returned as an upper bound (``exact=False``, shown "< 5m").

Cost: one pipelined ``LRANGE`` of ``window`` elements per non-empty bucket, whatever the backlog.
(Issue 12 adds read-side figure functions in this package; the two should become one.)
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from benchcelery.jobs.registry import site_of
from benchcelery.keys import UNKNOWN_SITE

if TYPE_CHECKING:
    import redis

    from benchcelery.keys import Keys

DEFAULT_WINDOW = 200


@dataclass(frozen=True)
class OldestAge:
    seconds: float  # age of the oldest waiting job (or, when not exact, an upper bound)
    exact: bool = True


# Celery writes the headers before the (base64) body, so the first match is the job's own.
_ID = re.compile(rb'"id": "([^":]*)::')
_STAMP = re.compile(rb'"enqueued_at": ([0-9.eE+-]+)')


def _enqueued_at(raw: bytes) -> tuple[str, float | None]:
    """(site, enqueued_at) of a kombu envelope: two regex searches, JSON only as a fallback."""
    found_id, found_stamp = _ID.search(raw), _STAMP.search(raw)
    if found_id and found_stamp:
        try:
            return found_id.group(1).decode(), float(found_stamp.group(1))
        except ValueError:
            pass
    try:
        headers = json.loads(raw).get("headers") or {}
    except (ValueError, AttributeError):
        return UNKNOWN_SITE, None
    job_id = str(headers.get("id") or "")
    site = headers.get("site") or (site_of(job_id) if "::" in job_id else UNKNOWN_SITE)
    stamp = headers.get("enqueued_at")
    return str(site), float(stamp) if isinstance(stamp, int | float) else None


def oldest_ages(
    r: redis.Redis,
    keys: Keys,
    queues: Iterable[str],
    pending: dict[str, dict[str, int]] | None = None,
    window: int = DEFAULT_WINDOW,
    now: float | None = None,
) -> dict[str, dict[str, OldestAge]]:
    """queue -> site -> age of its oldest waiting job; the site ``""`` holds the queue's oldest.

    ``pending`` (queue -> site -> count, from ``inspect.count_pending``) names the sites that have
    waiting jobs, so a site missing from the window still gets its lower bound.
    """
    queues = list(queues)
    now = time.time() if now is None else now
    pipe = r.pipeline(transaction=False)
    for q in queues:
        for key in keys.queue_lists(q):
            pipe.lrange(key, -window, -1)
    replies = pipe.execute()
    width = len(keys.queue_lists("x"))
    out: dict[str, dict[str, OldestAge]] = {}
    for i, q in enumerate(queues):
        oldest: dict[str, float] = {}
        bound: float | None = None  # unseen jobs are newer than this (the oldest "youngest" of a full window)
        for items in replies[i * width : (i + 1) * width]:
            youngest: float | None = None
            for raw in items:
                site, stamp = _enqueued_at(raw)
                if stamp is None:
                    continue
                for name in (site, ""):
                    if name not in oldest or stamp < oldest[name]:
                        oldest[name] = stamp
                youngest = stamp if youngest is None else max(youngest, stamp)
            if len(items) >= window and youngest is not None:
                bound = youngest if bound is None else min(bound, youngest)
        ages = {name: OldestAge(max(0.0, now - stamp)) for name, stamp in oldest.items()}
        for site, count in (pending or {}).get(q, {}).items():
            if count > 0 and site not in ages and bound is not None:
                ages[site] = OldestAge(max(0.0, now - bound), exact=False)
        out[q] = ages
    return out
