"""``bench`` with a hook that reports when the first job starts (benchmarks/startup_ab.py): the wall time
since ``$AB_SPAWN_AT`` and the CPU the worker's processes used until then, then the worker ends.

Run as a script (``python benchmarks/startup_first.py worker --burst``), so the benchcelery it imports
is the one first on PYTHONPATH.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any


def _cpu(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()  # noqa: SIM115
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _first(**_: Any) -> None:
    wall = time.time() - float(os.environ["AB_SPAWN_AT"])
    cpu = _cpu(os.getppid()) + time.process_time()  # the main process, and this pool process since its fork
    print(f"FIRST wall={wall:.4f} cpu={cpu:.3f}", file=sys.stderr, flush=True)
    os.kill(os.getppid(), 9)
    os._exit(0)


if __name__ == "__main__":
    from celery import signals

    from benchcelery.cli import main

    signals.task_prerun.connect(_first, weak=False)
    sys.argv = ["bench", *sys.argv[1:]]
    main()
