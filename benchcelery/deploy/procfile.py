"""What ``bench start`` runs: the Procfile's processes, each command made signal-friendly, the
environment they get, and the Linux hook that stops them when ``bench start`` dies."""

from __future__ import annotations

import os
import re
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from benchcelery.bench.layout import Bench
from benchcelery.errors import BenchError

_SHELL_SYNTAX = re.compile(r"[;&|()`\n]|^\s*[A-Za-z_][A-Za-z0-9_]*=")


def parse_procfile(path: Path) -> list[tuple[str, str]]:
    if not path.is_file():
        raise BenchError(f"No Procfile at {path}; create it with: bench setup procfile")
    from honcho.environ import parse_procfile as honcho_parse

    processes = list(honcho_parse(path.read_text()).processes.items())
    if not processes:
        raise BenchError(f"{path} lists no processes")
    return processes


# Frappe's log names (its supervisor files) where they differ from the Procfile's process names, so
# development and supervisor/systemd write the same files.
LOG_NAMES = {"redis_queue": "redis-queue"}


def log_name(process: str) -> str:
    """The stem of ``logs/<stem>.log`` and ``logs/<stem>.error.log`` for a Procfile process."""
    return LOG_NAMES.get(process, process)


def direct_command(cmd: str) -> tuple[str, bool]:
    """Prefix a simple command with ``exec`` so the shell is replaced by it and a signal reaches
    the program itself; commands with shell syntax keep their shell (they are signalled as a group)."""
    if _SHELL_SYNTAX.search(cmd):
        return cmd, False
    return f"exec {cmd}", True


def process_env(bench: Bench) -> dict[str, str]:
    env = dict(os.environ)
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([bin_dir, env.get("PATH", "")]) if env.get("PATH") else bin_dir
    env["PYTHONUNBUFFERED"] = "1"
    env["BENCH_PATH"] = str(bench.root)
    env["BENCH_WORKER_RELOAD"] = "1"  # development: workers restart with the new code on change (worker/reload.py)
    return env


def die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn that makes the child get TERM when ``bench start`` dies, even by SIGKILL (Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def preexec() -> None:
        prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG

    return preexec
