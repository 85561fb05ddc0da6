"""``--strategy random``: serve the worker's queues in a new random order for every fetch."""

from __future__ import annotations

import random
from typing import Any

from kombu.utils.scheduling import round_robin_cycle


class random_cycle(round_robin_cycle):
    def consume(self, n: int) -> list[Any]:
        items = list(self.items[:n])
        random.shuffle(items)
        return items

    def rotate(self, last_used: Any) -> None:
        pass
