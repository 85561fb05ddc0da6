"""``bench start -c NAME=N``: the Procfile with N copies of a process (honcho's ``-c``, which Frappe
passes through), written beside the pid files and run instead of the Procfile."""

from __future__ import annotations

from pathlib import Path

from benchcelery.bench.layout import Bench
from benchcelery.deploy.procman import FIRST, parse_procfile
from benchcelery.errors import BenchError, ValidationError

MAX_COPIES = 64  # more copies of one process than this is a typo, not a development set-up


def parse_concurrency(value: str) -> dict[str, int]:
    """``worker=2,schedule=1`` → ``{"worker": 2, "schedule": 1}``; ValidationError when malformed."""
    counts: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in value.split(","))):
        name, sep, number = part.partition("=")
        if not sep or not name.strip() or not number.strip().isdigit() or int(number) > MAX_COPIES:
            raise ValidationError(f"--concurrency takes NAME=N pairs (N from 0 to {MAX_COPIES}), got {part!r}")
        counts[name.strip()] = int(number)
    return counts


def concurrency_procfile(bench: Bench, procfile: Path, value: str) -> Path:
    """Write ``config/pids/Procfile.concurrency`` from ``procfile`` with the copies asked for
    (``worker-1``, ``worker-2``, ...; 0 leaves a process out) and return its path."""
    counts = parse_concurrency(value)
    if not procfile.is_file():
        raise BenchError(f"No Procfile at {procfile} (bench setup procfile)")
    processes = parse_procfile(procfile)
    unknown = sorted(set(counts) - {name for name, _ in processes})
    if unknown:
        raise ValidationError(f"--concurrency names {', '.join(unknown)}, not in {procfile.name}")
    if any(counts.get(name, 1) != 1 for name in FIRST):
        raise ValidationError("--concurrency: the queue Redis runs once")
    lines = []
    for name, command in processes:
        n = counts.get(name, 1)
        lines += [f"{name}: {command}"] if n == 1 else [f"{name}-{i}: {command}" for i in range(1, n + 1)]
    path = bench.config_path / "pids" / "Procfile.concurrency"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path
