"""Ages of the oldest waiting jobs, per queue and site, for pages that show ages rather than times.

A view over ``figures.oldest_waiting`` (the one reader of the queues' oldest ends): the queue's age
is exact; a site's is the age of its oldest job among the oldest ``window`` messages of each list,
and a site with no job among them has no age here (shown as unknown).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from benchcelery.diagnostics.figures import SITE_WINDOW, oldest_waiting

if TYPE_CHECKING:
    import redis

    from benchcelery.bench.keys import Keys


@dataclass(frozen=True)
class OldestAge:
    seconds: float  # age of the oldest waiting job


def oldest_ages(
    r: redis.Redis,
    keys: Keys,
    queues: Iterable[str],
    pending: dict[str, dict[str, int]],
    window: int = SITE_WINDOW,
    now: float | None = None,
) -> dict[str, dict[str, OldestAge]]:
    """queue -> site -> age of its oldest waiting job; the site ``""`` holds the queue's oldest.
    ``pending``: queue -> site -> count (``inspect.count_pending``)."""
    now = time.time() if now is None else now
    found = oldest_waiting(r, keys, {q: pending.get(q, {}) for q in queues}, window)
    out: dict[str, dict[str, OldestAge]] = {}
    for q, (oldest, per_site) in found.items():
        stamps = {**per_site, **({"": oldest} if oldest is not None else {})}
        out[q] = {site: OldestAge(max(0.0, now - stamp)) for site, stamp in stamps.items()}
    return out
