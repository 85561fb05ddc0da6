"""At most once a minute per key in this process: the metric writes that need not go with every
job (a key's expiry, a histogram's last-written time; durations.py and history.py).

A worker's tally (tally.py) asks a throttle only when one of its keys can be ready again
(``due``), not for every job: ``generation`` tells it when a throttle forgot its keys (full, or
reset by tests and settings), after which every key is ready at once.
"""

from __future__ import annotations

from collections.abc import Hashable

EARLY = 0.001  # s: ``due`` answers this much early, so float rounding of ``last + every`` never hides a ready key


class Throttle:
    """Keys ready at most once every ``every`` seconds; forgets them all past ``size`` keys."""

    generation = 0  # counts the forgetting of every throttle (a cached ``due`` is stale after one)

    def __init__(self, every: float, size: int) -> None:
        self.every = every
        self.size = size
        self.last: dict[Hashable, float] = {}  # key -> when it was last ready

    def ready(self, key: Hashable, now: float) -> bool:
        """Whether ``key``'s write goes at ``now`` (then not again for ``every`` seconds)."""
        if now - self.last.get(key, 0.0) < self.every:
            return False
        if len(self.last) > self.size:
            self.clear()
        self.last[key] = now
        return True

    def due(self, key: Hashable) -> float:
        """A time before which ``ready(key, ...)`` cannot be True (``ready`` decides from then on)."""
        return self.last.get(key, 0.0) + self.every - EARLY

    def clear(self) -> None:
        self.last.clear()
        Throttle.generation += 1
