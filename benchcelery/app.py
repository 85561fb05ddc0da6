"""Module-level Celery app of the bench found from $BENCH_PATH or the current directory, so
Celery's own tools work against a bench: ``celery -A benchcelery.app inspect ping``, ``events``,
Flower. benchcelery itself never imports this module.
"""

from __future__ import annotations

import sys

from benchcelery.errors import BenchError
from benchcelery.runtime import get_runtime

try:
    app = get_runtime().app
except BenchError as exc:
    # Celery would print a traceback for any error raised while loading -A: one line instead.
    print(f"benchcelery.app: {exc}", file=sys.stderr)
    raise SystemExit(exc.exit_code) from None
celery = app
