"""``bench start``: run the bench's Procfile in the foreground with prefixed, coloured output
(honcho's printer and process wrapper), ordered for a job queue:

- ``redis_queue`` starts first; the rest start once its port accepts connections;
- on Ctrl-C / TERM every other process gets TERM *to itself only* (Celery warm shutdown: a
  worker finishes its running job; its pool children, which die on TERM, are left to it), and
  Redis gets TERM only after they exited, so workers can still ack; a second Ctrl-C or the stop
  timeout SIGKILLs the process groups;
- if any process exits on its own, everything is stopped the same way (as honcho and bench do);
- at the end every process group is checked and killed, so nothing is left running.

Also ``bench run-redis``: exec the queue Redis (binary from PATH or the embedded one, resolved at
start so the Procfile stays valid when the binary moves), or stand by when something else already
serves the port.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchcelery.bench import Bench
from benchcelery.errors import BenchError

FIRST = ("redis_queue",)
REDIS_START_TIMEOUT = 30.0
_SHELL_SYNTAX = re.compile(r"[;&|()`\n]|^\s*[A-Za-z_][A-Za-z0-9_]*=")


def parse_procfile(path: Path) -> list[tuple[str, str]]:
    if not path.is_file():
        raise BenchError(f"No Procfile at {path}; create it with: bench setup procfile")
    from honcho.environ import parse_procfile as honcho_parse

    processes = list(honcho_parse(path.read_text()).processes.items())
    if not processes:
        raise BenchError(f"{path} lists no processes")
    return processes


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
    return env


@dataclass
class _Proc:
    name: str
    cmd: str
    direct: bool
    first: bool
    runner: Any = None  # multiprocessing.Process relaying the output
    pid: int | None = None
    returncode: int | None = None


class ProcfileRunner:
    """Runs processes like honcho's Manager, with ordered start and stop (see the module doc)."""

    def __init__(
        self,
        bench: Bench,
        processes: list[tuple[str, str]],
        redis_port: int | None,
        stop_timeout: float,
        prefix: bool = True,
        colour: bool = True,
    ) -> None:
        import multiprocessing

        from honcho.colour import get_colours
        from honcho.printer import Printer

        self.bench = bench
        self.redis_port = redis_port
        self.stop_timeout = stop_timeout
        self.events: Any = multiprocessing.get_context("fork").Queue()
        self.printer = Printer(sys.stdout, colour=colour, prefix=prefix)
        self.printer.width = max([6, *(len(n) for n, _ in processes)])
        self.colours = get_colours()
        self.env = process_env(bench)
        self.procs = []
        for name, cmd in processes:
            command, direct = direct_command(cmd)
            self.procs.append(_Proc(name, command, direct, name in FIRST))
        self.stopping_since: float | None = None
        self.forced = False
        self.returncode = 0

    # --- output ---
    def say(self, text: str) -> None:
        from datetime import datetime

        from honcho.printer import Message

        self.printer.write(Message(type="line", data=text + "\n", time=datetime.now(), name="system", colour=None))

    # --- lifecycle ---
    def _spawn(self, proc: _Proc) -> None:
        import multiprocessing

        from honcho.process import Process

        hp = Process(proc.cmd, name=proc.name, colour=next(self.colours), env=self.env, cwd=str(self.bench.root))
        proc.runner = multiprocessing.get_context("fork").Process(
            name=proc.name, target=hp.run, args=(self.events, True)
        )
        proc.runner.start()

    def _signal(self, proc: _Proc, sig: int, group: bool) -> None:
        if proc.pid is None or proc.returncode is not None:
            return
        try:
            if group or not proc.direct:
                os.killpg(proc.pid, sig)
            else:
                os.kill(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def request_stop(self, reason: str) -> None:
        if self.stopping_since is None:
            self.say(f"{reason}: stopping (workers finish their running job; Ctrl-C again to kill)")
            self.stopping_since = time.monotonic()
            for proc in self.procs:
                if not proc.first:
                    self._signal(proc, signal.SIGTERM, group=False)
        elif not self.forced:
            self.force(f"{reason} again")

    def force(self, reason: str) -> None:
        self.forced = True
        self.say(f"{reason}: killing every process (a running job goes back to its queue once its lease lapses)")
        for proc in self.procs:
            if not proc.first:
                self._signal(proc, signal.SIGKILL, group=True)

    def run(self) -> int:
        def on_signal(signum: int, _frame: Any) -> None:
            self.request_stop(signal.Signals(signum).name)

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        first = [p for p in self.procs if p.first]
        rest = [p for p in self.procs if not p.first]
        for proc in first:
            self._spawn(proc)
        rest_started = first_stopped = False
        started_at = time.monotonic()
        try:
            while True:
                self._drain_events()
                now = time.monotonic()
                if not rest_started and self.stopping_since is None:
                    if not first or (self.redis_port and _listening(self.redis_port)) or not self.redis_port:
                        for proc in rest:
                            self._spawn(proc)
                        rest_started = True
                    elif now - started_at > REDIS_START_TIMEOUT:
                        self.returncode = 1
                        self.request_stop(f"Redis did not accept connections on port {self.redis_port}")
                if self.stopping_since is None and any(p.returncode is not None for p in self.procs):
                    gone = next(p for p in self.procs if p.returncode is not None)
                    self.returncode = gone.returncode or 1
                    self.request_stop(f"{gone.name} exited")
                if self.stopping_since is not None:
                    others = [p for p in (rest if rest_started else []) if p.runner is not None]
                    if not first_stopped and all(p.returncode is not None or not p.runner.is_alive() for p in others):
                        first_stopped = True
                        for proc in first:
                            self._signal(proc, signal.SIGTERM, group=False)
                    if not self.forced and now - self.stopping_since > self.stop_timeout:
                        self.force(f"Still running after {self.stop_timeout:.0f} s")
                    if now - self.stopping_since > self.stop_timeout + 30:
                        for proc in first:
                            self._signal(proc, signal.SIGKILL, group=True)
                    if all(p.runner is None or not p.runner.is_alive() for p in self.procs):
                        self._drain_events()
                        break
        finally:
            self._sweep()
        return self.returncode

    def _drain_events(self) -> None:
        import queue

        try:
            msg = self.events.get(timeout=0.1)
        except queue.Empty:
            return
        while True:
            self._handle(msg)
            try:
                msg = self.events.get_nowait()
            except queue.Empty:
                return

    def _handle(self, msg: Any) -> None:
        proc = next((p for p in self.procs if p.name == msg.name), None)
        if msg.type == "line":
            self.printer.write(msg)
        elif proc is not None and msg.type == "start":
            proc.pid = msg.data["pid"]
            self.say(f"{proc.name} started (pid={proc.pid})")
            if self.stopping_since is not None:
                self._signal(proc, signal.SIGTERM, group=False)
        elif proc is not None and msg.type == "stop":
            proc.returncode = msg.data["returncode"]
            self.say(f"{proc.name} stopped (rc={proc.returncode})")

    def _sweep(self) -> None:
        """Kill whatever is left in the processes' groups (each ran in its own session)."""
        for proc in self.procs:
            if proc.pid is None:
                continue
            try:
                os.killpg(proc.pid, signal.SIGKILL)
                self.say(f"killed leftover processes of {proc.name}")
            except (ProcessLookupError, PermissionError):
                pass
            if proc.runner is not None:
                proc.runner.join(5)


def _listening(port: int) -> bool:
    from benchcelery.redis_server import is_listening

    return is_listening(port)


def start(bench: Bench, procfile: Path | None = None, prefix: bool = True, stop_timeout: float | None = None) -> int:
    """Run the Procfile until Ctrl-C / TERM or until a process exits; returns the exit code."""
    from benchcelery.config import Settings
    from benchcelery.deploy.plan import make_plan

    try:
        import honcho  # noqa: F401
    except ImportError:
        raise BenchError("bench start needs honcho: pip install 'benchcelery[run]'") from None
    settings = Settings.from_bench(bench)
    plan = make_plan(settings)
    processes = parse_procfile(procfile or bench.root / "Procfile")
    if stop_timeout is None:
        stop_timeout = max(g.stop_wait for g in plan.workers)
    runner = ProcfileRunner(bench, processes, plan.redis_port, stop_timeout, prefix=prefix, colour=sys.stdout.isatty())
    return runner.run()


def run_redis(bench: Bench) -> None:
    """Exec the queue Redis with config/redis_queue.conf (written first when missing); when the port
    is already served (a system Redis, another manager), stand by until TERM/INT instead."""
    from benchcelery.config import Settings
    from benchcelery.deploy.files import REDIS_DATA, render_redis, write_files
    from benchcelery.deploy.plan import make_plan
    from benchcelery.redis_server import find_server_binary

    settings = Settings.from_bench(bench)
    plan = make_plan(settings)
    if not plan.own_redis or plan.redis_port is None:
        raise BenchError(f"redis_queue ({settings.display_url}) is not on this machine; nothing to run")
    (bench.config_path / REDIS_DATA).mkdir(parents=True, exist_ok=True)
    if not plan.redis_conf.is_file():
        write_files(render_redis(settings))
    if _listening(plan.redis_port):
        print(
            f"Redis already serves 127.0.0.1:{plan.redis_port} (not started by this bench); using it",
            flush=True,
        )
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
        signal.sigwait({signal.SIGTERM, signal.SIGINT})
        return
    binary = find_server_binary()
    sys.stdout.flush()
    os.execv(binary, [binary, str(plan.redis_conf)])
