"""Child processes with deadlines: spawning, measuring a process tree, and killing it for sure.

Every child starts in its own session (process group), is registered in ``LIVE`` and is killed as a
group by ``kill_all`` (called on exit, on Ctrl-C and on SIGTERM), so no worker outlives a run.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

LIVE: dict[int, subprocess.Popen[bytes]] = {}


class Timeout(RuntimeError):
    """A child did not finish within its deadline (it has been killed)."""


def spawn(cmd: Sequence[str], env: dict[str, str], cwd: Path, log: Path | None = None) -> subprocess.Popen[bytes]:
    """Start ``cmd`` in its own process group; output goes to ``log`` (or nowhere)."""
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - the child keeps its own copy
    try:
        proc = subprocess.Popen(
            list(cmd), env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    finally:
        if log:
            out.close()  # type: ignore[union-attr]
    LIVE[proc.pid] = proc
    return proc


def log_tail(log: Path, chars: int = 1500) -> str:
    """The end of a child's log, without Celery's warning about running as root."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return ""
    lines = [ln for ln in text.splitlines() if ln.strip() and "superuser" not in ln and "uid" not in ln.lower()]
    return "\n".join(lines)[-chars:]


def kill_group(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def reap(proc: subprocess.Popen[bytes], timeout: float) -> tuple[int, resource.struct_rusage | None]:
    """Wait for ``proc`` (polling, so the deadline holds); returns its exit code and rusage.

    The rusage covers the process and every descendant it waited for (pool processes, rq's
    work horses). On timeout the whole group is killed and ``Timeout`` raised.
    """
    deadline = time.monotonic() + timeout
    while True:
        if proc.returncode is not None:  # already reaped elsewhere
            LIVE.pop(proc.pid, None)
            return proc.returncode, None
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            LIVE.pop(proc.pid, None)
            kill_group(proc)  # stray grandchildren, if any
            return proc.returncode, usage
        if time.monotonic() > deadline:
            kill_group(proc)
            proc.wait(10)
            LIVE.pop(proc.pid, None)
            raise Timeout(f"{proc.args!r} (pid {proc.pid}) still running after {timeout:.0f} s")
        time.sleep(0.01)


def stop(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> tuple[int, resource.struct_rusage | None]:
    """SIGTERM the process (a warm shutdown), then reap it; SIGKILL the group after ``timeout``."""
    if proc.returncode is None:
        try:
            os.kill(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    return reap(proc, timeout)


def kill_all() -> None:
    for proc in list(LIVE.values()):
        kill_group(proc, signal.SIGKILL)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        LIVE.pop(proc.pid, None)


def run(cmd: Sequence[str], env: dict[str, str], cwd: Path, timeout: float) -> tuple[int, float, str]:
    """Run ``cmd`` to completion; returns (exit code, wall seconds from spawn to exit, output)."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        list(cmd), env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    LIVE[proc.pid] = proc
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        proc.communicate()
        raise Timeout(f"{' '.join(cmd)} still running after {timeout:.0f} s")
    finally:
        LIVE.pop(proc.pid, None)
    return proc.returncode, time.perf_counter() - started, out.decode(errors="replace")


def tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


@dataclass
class RssSampler:
    """Samples the summed RSS of a process tree in a thread; keeps the peak (bytes)."""

    pid: int
    interval: float = 0.25
    peak: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> RssSampler:
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(5)

    def _loop(self) -> None:
        while not self._stop.is_set():
            total = 0
            for p in tree(self.pid):
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            self._stop.wait(self.interval)


@dataclass
class Memory:
    procs: int
    rss_main: int
    rss_tree: int
    pss_tree: int | None
    uss_tree: int | None


def memory_of(pid: int) -> Memory:
    """RSS of the main process and of its whole tree; PSS/USS where /proc/<pid>/smaps_rollup allows."""
    procs = tree(pid)
    rss_main = rss_tree = 0
    pss: int | None = 0
    uss: int | None = 0
    for i, p in enumerate(procs):
        try:
            info = p.memory_full_info()
        except psutil.AccessDenied:
            info = p.memory_info()
        except psutil.Error:
            continue
        if i == 0:
            rss_main = info.rss
        rss_tree += info.rss
        p_pss, p_uss = getattr(info, "pss", None), getattr(info, "uss", None)
        pss = None if pss is None or p_pss is None else pss + p_pss
        uss = None if uss is None or p_uss is None else uss + p_uss
    return Memory(len(procs), rss_main, rss_tree, pss, uss)
