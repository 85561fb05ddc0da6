"""One ``bench start`` per bench, and a record of the processes it started.

``config/pids/bench_start.lock`` is held (``flock``) by the running ``bench start``: a second one is
refused while the first runs. ``config/pids/bench_start.json`` lists the processes it started (name,
pid, kernel start time); when a ``bench start`` was killed so hard that its processes outlived it, the
next one finds them there and stops them (saying so) instead of silently running next to them.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

from benchcelery.bench.layout import Bench
from benchcelery.errors import BenchError

LOCK_FILE = "bench_start.lock"
RECORD_FILE = "bench_start.json"


@dataclass(frozen=True)
class Started:
    name: str
    pid: int
    start_time: str | None  # /proc/<pid>/stat start time: tells a reused pid from ours


def start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (Linux), or None when unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]


def is_alive(record: Started) -> bool:
    """Is the process of ``record`` still running (the same process, not a reused pid)?"""
    try:
        os.kill(record.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if record.start_time is None or not Path("/proc").is_dir():
        return True
    current = start_time(record.pid)
    return current is not None and current == record.start_time


class StartLock:
    """Held for the life of one ``bench start`` (see the module doc)."""

    def __init__(self, bench: Bench) -> None:
        self.folder = bench.config_path / "pids"
        self.record_path = self.folder / RECORD_FILE
        self._lock: IO[str] | None = None
        self.started: list[Started] = []

    def acquire(self) -> list[Started]:
        """Take the lock (BenchError when another ``bench start`` holds it); returns the processes of
        an earlier run that are still alive."""
        self.folder.mkdir(parents=True, exist_ok=True)
        lock = open(self.folder / LOCK_FILE, "a+")  # noqa: SIM115 - held until release()
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "?"
            lock.close()
            raise BenchError(
                f"bench start is already running for this bench (pid {holder}); stop it first (Ctrl-C in its "
                f"terminal or kill {holder})"
            ) from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        self._lock = lock
        return [r for r in self._read() if is_alive(r)]

    def add(self, name: str, pid: int) -> None:
        self.started.append(Started(name, pid, start_time(pid)))
        self._write()

    def release(self) -> None:
        if self._lock is None:
            return
        with contextlib.suppress(OSError):
            self.record_path.unlink()
        self._lock.close()
        self._lock = None

    def _read(self) -> list[Started]:
        try:
            data = json.loads(self.record_path.read_text())
            return [Started(p["name"], int(p["pid"]), p.get("start_time")) for p in data["processes"]]
        except (OSError, ValueError, KeyError, TypeError):
            return []

    def _write(self) -> None:
        tmp = self.record_path.with_name(f".{RECORD_FILE}.tmp")
        tmp.write_text(json.dumps({"pid": os.getpid(), "processes": [asdict(s) for s in self.started]}) + "\n")
        os.replace(tmp, self.record_path)
