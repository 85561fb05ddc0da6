"""`bench start` never leaves a process behind: a closed terminal (SIGHUP), a closed stdout pipe
(`bench start | head`), a second `bench start`, processes left by a killed one. Real `bench start`
processes on their own Redis; psutil says what is still running. Deadlines, never sleeps.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import subprocess
import termios
import threading
from pathlib import Path

import psutil

from benchcelery.store.server import is_listening
from tests.conftest import BENCH_BIN, BenchHandle, alive, wait_until


def _family(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children(recursive=True)


def _names(family: list[psutil.Process]) -> str:
    return " ".join(sorted(p.name() for p in family if alive(p)))


def _running_job(handle: BenchHandle, key: str) -> None:
    """Everything is up: a 2 s job has started on the worker."""
    handle.enqueue("testapp.tasks.sleep_then_record", queue="short", key=key, seconds=2, value="done")
    handle.wait_results(key, 1, timeout=90)


def _assert_all_gone(family: list[psutil.Process], handle: BenchHandle) -> None:
    assert len(family) >= 4, _names(family)  # Redis, the scheduler, the worker and its pool child
    wait_until(lambda: not any(alive(p) for p in family), 15, what="every process to stop")
    assert not is_listening(handle.port)


def test_closed_terminal_sighup_stops_everything_in_order(own_bench: BenchHandle) -> None:
    master, slave = os.openpty()

    def controlling_tty() -> None:
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen(
        [BENCH_BIN, "start"],
        cwd=own_bench.root,
        env=own_bench.env(),
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
        preexec_fn=controlling_tty,
    )
    own_bench.procs.append(proc)
    os.close(slave)
    screen: list[bytes] = []
    stop = threading.Event()

    def read_terminal() -> None:
        while not stop.is_set():
            if select.select([master], [], [], 0.1)[0]:
                try:
                    screen.append(os.read(master, 65536))
                except OSError:
                    return

    reader = threading.Thread(target=read_terminal, daemon=True)
    reader.start()
    _running_job(own_bench, "hup")
    family = _family(proc.pid)
    stop.set()
    reader.join(5)
    os.close(master)  # the terminal goes away (tmux kill-session, a closed ssh window): SIGHUP
    assert proc.wait(60) == 0
    _assert_all_gone(family, own_bench)
    # The running job finished before the worker stopped, and the worker's log says so.
    worker_log = (own_bench.root / "logs" / "worker.error.log").read_text()
    assert "sleep_then_record" in worker_log and "succeeded" in worker_log, worker_log[-2000:]
    assert "Warm shutdown" in (own_bench.root / "logs" / "worker.log").read_text()
    assert not (own_bench.root / "config" / "pids" / "bench_start.json").exists()


def test_closed_stdout_pipe_stops_everything(own_bench: BenchHandle) -> None:
    proc = subprocess.Popen(
        [BENCH_BIN, "start"],
        cwd=own_bench.root,
        env=own_bench.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    own_bench.procs.append(proc)
    _running_job(own_bench, "pipe")
    family = _family(proc.pid)
    assert proc.stdout is not None
    proc.stdout.close()  # what `bench start | head` does once head has its lines
    assert proc.wait(60) == 0
    _assert_all_gone(family, own_bench)
    assert "succeeded" in (own_bench.root / "logs" / "worker.error.log").read_text()


def test_one_start_per_bench_and_leftovers_are_stopped(own_bench: BenchHandle) -> None:
    # A process recorded by an earlier `bench start` that died without stopping it.
    leftover = subprocess.Popen(["sleep", "120"], start_new_session=True)
    pids = own_bench.root / "config" / "pids"
    pids.mkdir(parents=True, exist_ok=True)
    start_time = Path(f"/proc/{leftover.pid}/stat").read_text().rsplit(")", 1)[-1].split()[19]
    record = {"pid": 1, "processes": [{"name": "worker", "pid": leftover.pid, "start_time": start_time}]}
    (pids / "bench_start.json").write_text(json.dumps(record))

    first = own_bench.start("start")
    assert leftover.wait(30) is not None
    wait_until(lambda: "worker started" in own_bench.output(first), 60, what="the first bench start")
    assert f"left running by an earlier bench start: worker (pid {leftover.pid})" in own_bench.output(first)

    second = own_bench.run("start", timeout=30)
    assert second.returncode == 1
    assert second.stderr.strip() == (
        f"bench start is already running for this bench (pid {first.pid}); stop it first "
        f"(Ctrl-C in its terminal or kill {first.pid})"
    )
    assert "started" not in second.stdout
    first.terminate()
    assert first.wait(60) == 0
