"""Module-level Celery app of the bench found from $BENCH_PATH or the current directory, so
Celery's own tools work against a bench: ``celery -A benchcelery.app inspect ping``, ``events``,
Flower. benchcelery itself never imports this module.
"""

from __future__ import annotations

from benchcelery.runtime import get_runtime

app = get_runtime().app
celery = app
