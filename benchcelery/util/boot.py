"""The garbage collector during a command's start-up.

A command's imports and boot (click, Celery, kombu, redis-py, a worker's blueprint) allocate
long-lived objects almost only: the ~130 collections they trigger free next to nothing and cost
~28 ms of a worker's ~0.25 s spawn -> first job here (benchmarks/ISSUE28.md). So ``bench`` starts
with the collector off (``pause``, in ``cli.main``) and turns it back on before the command runs
(``resume``, from the root group); a worker, whose start-up lasts until its boot is done, turns it
back on there instead, with everything the boot made moved out of its reach (``booted``).
"""

from __future__ import annotations

import gc

BOOTS_ITSELF = frozenset({"worker", "worker-pool"})  # commands that call ``booted`` themselves


def pause() -> None:
    gc.disable()


def resume(command: str | None) -> None:
    """Before ``command`` runs: the collector back on, unless the command turns it on itself."""
    if command not in BOOTS_ITSELF:
        gc.enable()


def booted() -> None:
    """A long-running process's boot is done: move what it allocated (modules, classes, the app)
    out of the collector's reach (``gc.freeze``) and turn the collector back on. A prefork pool's
    fork runs a full collection first (Celery), which then has nothing to walk, and the pool
    processes' collections no longer write to the pages they share with the main process."""
    gc.freeze()
    gc.enable()
