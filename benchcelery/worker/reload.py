"""Reload on change (development): a worker started with ``--reload`` (``bench start``'s workers are)
watches the Python files of the bench's installed apps; when one changes it stops taking jobs, lets
the running ones finish (a warm shutdown: prefetched jobs go back to their queue, as on any stop)
and starts again in the same process (``exec``, same pid, so ``bench start`` and supervisor see no
exit), with the new code. Polling, no extra dependency: one ``stat`` per file a second.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

POLL_INTERVAL = 1.0
SKIP_DIRS = {"__pycache__", "node_modules", ".git"}
ENV = "BENCH_WORKER_RELOAD"  # set by `bench start` for its processes: the default of --reload

_requested = threading.Event()


def default_on() -> bool:
    return os.environ.get(ENV, "") == "1"


def app_dirs(apps: Iterable[str]) -> list[Path]:
    """The package directory of each installed app (found without importing it)."""
    found = []
    for app in apps:
        try:
            spec = importlib.util.find_spec(app)
        except (ImportError, ValueError):
            continue
        for location in (spec and spec.submodule_search_locations) or []:
            found.append(Path(location))
    return found


def snapshot(dirs: Iterable[Path]) -> dict[str, tuple[int, int]]:
    """(mtime_ns, size) of every .py file under ``dirs``."""
    seen: dict[str, tuple[int, int]] = {}
    for top in dirs:
        for root, subdirs, files in os.walk(top):
            subdirs[:] = [d for d in subdirs if d not in SKIP_DIRS]
            for name in files:
                if name.endswith(".py"):
                    path = os.path.join(root, name)
                    try:
                        st = os.stat(path)
                    except OSError:  # removed meanwhile: the next pass sees it gone
                        continue
                    seen[path] = (st.st_mtime_ns, st.st_size)
    return seen


def changed(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> str | None:
    """A file that was added, removed or modified, or None."""
    for path in sorted(set(before) | set(after)):
        if before.get(path) != after.get(path):
            return path
    return None


def watch(dirs: list[Path], on_change: Callable[[str], None], interval: float = POLL_INTERVAL) -> threading.Thread:
    """Start a daemon thread that calls ``on_change(path)`` once, at the first change under ``dirs``."""

    def run() -> None:
        before = snapshot(dirs)
        while True:
            threading.Event().wait(interval)
            path = changed(before, snapshot(dirs))
            if path is not None:
                on_change(path)
                return

    thread = threading.Thread(target=run, name="bench-reload", daemon=True)
    thread.start()
    return thread


def request_restart(path: str) -> None:
    """Ask the running Celery worker for a warm shutdown; ``restart_if_requested`` then re-executes."""
    from celery.worker import state

    print(
        f"worker: {path} changed: restarting with the new code (running jobs finish first)",
        file=sys.__stdout__ or sys.stdout,
        flush=True,
    )
    _requested.set()
    state.should_stop = 0  # EX_OK: the worker's loop raises WorkerShutdown (warm) on its next turn


def restart_if_requested() -> None:
    """After the worker stopped: start this command again in this process when a change asked for it."""
    if not _requested.is_set():
        return
    import logging

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    argv = [sys.executable, *sys.orig_argv[1:]]
    os.execv(sys.executable, argv)
