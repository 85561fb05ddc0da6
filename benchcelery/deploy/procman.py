"""``bench start``: run the bench's Procfile in the foreground with prefixed, coloured output
(honcho's printer), ordered for a job queue:

- ``redis_queue`` starts first; the rest start once its port accepts connections;
- on Ctrl-C, TERM, HUP (the terminal went away) or a closed stdout (``bench start | head``) every
  other process gets TERM *to itself only* (Celery warm shutdown: a worker finishes its running job;
  its pool children, which die on TERM, are left to it), and Redis gets TERM only after they exited,
  so workers can still ack; a second signal or the stop timeout SIGKILLs the process groups;
- if any process exits on its own, everything is stopped the same way (as honcho and bench do);
- at the end every process group is checked and killed, so nothing is left running; children also
  get TERM from the kernel if ``bench start`` itself is killed (Linux ``PR_SET_PDEATHSIG``);
- one ``bench start`` per bench (``startlock``): processes an earlier one left behind are stopped,
  with a message, before anything starts;
- ``bench restart`` (SIGUSR1 to ``bench start``) stops every process but Redis the same graceful
  way and starts it again, ``bench start`` keeps running; SIGUSR2 does it for the web processes;
- each process's stdout and stderr also go to ``logs/<name>.log`` and ``logs/<name>.error.log``
  (Frappe's ``logs/worker.log``, ``logs/worker.error.log``, ``logs/schedule.log``; ``redis_queue``
  writes Frappe's ``logs/redis-queue.log``, the name supervisor/systemd use too).
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from benchcelery.bench.layout import Bench
from benchcelery.deploy.console import Console
from benchcelery.deploy.procfile import die_with_parent, direct_command, log_name, parse_procfile, process_env
from benchcelery.deploy.startlock import Started, StartLock, is_alive
from benchcelery.errors import BenchError

FIRST = ("redis_queue",)
WEB_PROCESSES = ("realtime", "dashboard", "metrics")
# `bench restart` signals a running `bench start`: USR1 restarts every process but Redis, USR2 the web ones.
RESTART_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2)
RESTART_SIGNALS_BY_NAME = ("SIGUSR1", "SIGUSR2")
REDIS_START_TIMEOUT = 30.0


@dataclass
class _Proc:
    name: str
    cmd: str
    direct: bool
    first: bool
    colour: Any = None
    popen: subprocess.Popen[bytes] | None = None
    pid: int | None = None
    returncode: int | None = None
    streams: dict[int, _Stream] = field(default_factory=dict)  # fd -> stream
    restarting: float | None = None  # monotonic time `bench restart` asked it to stop, to start it again


@dataclass
class _Stream:
    proc: _Proc
    log: IO[bytes] | None
    pending: bytes = b""


class ProcfileRunner:
    """Runs the Procfile's processes with ordered start and stop (see the module doc). One process,
    no helper processes: children's output is read here and printed with honcho's printer."""

    def __init__(
        self,
        bench: Bench,
        processes: list[tuple[str, str]],
        redis_port: int | None,
        stop_timeout: float,
        prefix: bool = True,
        colour: bool = True,
        output: IO[str] | None = None,
    ) -> None:
        from honcho.colour import get_colours
        from honcho.printer import Printer

        self.bench = bench
        self.redis_port = redis_port
        self.stop_timeout = stop_timeout
        self.console = Console(output or sys.stdout)
        self.printer = Printer(self.console, colour=colour, prefix=prefix)  # type: ignore[arg-type]
        self.printer.width = max([6, *(len(n) for n, _ in processes)])
        colours = get_colours()
        self.env = process_env(bench)
        self.procs: list[_Proc] = []
        for name, cmd in processes:
            command, direct = direct_command(cmd)
            self.procs.append(_Proc(name, command, direct, name in FIRST, next(colours)))
        self.selector = selectors.DefaultSelector()
        self.lock = StartLock(bench)
        self.stopping_since: float | None = None
        self.forced = False
        self.returncode = 0
        self._signals: list[str] = []
        self._first = [p for p in self.procs if p.first]  # Redis: started first, stopped last
        self._rest = [p for p in self.procs if not p.first]
        self._started_at = 0.0
        self._rest_started = False
        self._first_stopped = False

    # --- output ---
    def say(self, text: str) -> None:
        self._print("system", text, None)

    def _print(self, name: str, text: str, colour: Any) -> None:
        from honcho.printer import Message

        self.printer.write(Message(type="line", data=text + "\n", time=datetime.now(), name=name, colour=colour))

    # --- lifecycle ---
    def _spawn(self, proc: _Proc) -> None:
        logs = self.bench.logs_path
        logs.mkdir(parents=True, exist_ok=True)
        popen = subprocess.Popen(
            proc.cmd,
            shell=True,
            env=self.env,
            cwd=str(self.bench.root),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # Ctrl-C in the terminal reaches only us: we stop them in order
            preexec_fn=die_with_parent(),
        )
        proc.popen, proc.pid = popen, popen.pid
        stem = log_name(proc.name)
        for pipe, file_name in ((popen.stdout, f"{stem}.log"), (popen.stderr, f"{stem}.error.log")):
            assert pipe is not None
            os.set_blocking(pipe.fileno(), False)
            log = open(logs / file_name, "ab")  # noqa: SIM115 - closed with the stream
            proc.streams[pipe.fileno()] = stream = _Stream(proc, log)
            self.selector.register(pipe.fileno(), selectors.EVENT_READ, stream)
        self.lock.add(proc.name, popen.pid)
        self.say(f"{proc.name} started (pid={proc.pid})")
        if self.stopping_since is not None:
            self._signal(proc, signal.SIGTERM, group=False)

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
        elif not self.forced and reason in ("SIGINT", "SIGTERM"):
            # Ctrl-C (or a TERM) again. A closed terminal both hangs up and closes stdout, in
            # either order: that is one request, and running jobs still finish.
            self.force(f"{reason} again")

    # --- `bench restart` in development (deploy/restart.py sends the signal) ---
    def restart_processes(self, web_only: bool) -> None:
        """SIGUSR1: stop every process but Redis gracefully (TERM: a worker finishes its running job)
        and start it again; SIGUSR2: the same for the web processes only (realtime, dashboard, metrics)."""
        if self.stopping_since is not None:
            return
        for proc in self.procs:
            if proc.first or proc.popen is None or proc.restarting or proc.returncode is not None:
                continue
            if web_only and proc.name not in WEB_PROCESSES:
                continue
            self.say(f"{proc.name}: restarting (bench restart)")
            proc.restarting = time.monotonic()
            self._signal(proc, signal.SIGTERM, group=False)

    def _respawn(self) -> None:
        for proc in self.procs:
            if proc.restarting is None:
                continue
            if self.stopping_since is not None:
                proc.restarting = None  # stopping for good: the normal stop path takes over
            elif proc.returncode is not None:
                proc.restarting, proc.popen, proc.pid, proc.returncode = None, None, None, None
                self._spawn(proc)
            elif time.monotonic() - proc.restarting > self.stop_timeout:
                self._signal(proc, signal.SIGKILL, group=True)

    def force(self, reason: str) -> None:
        self.forced = True
        self.say(f"{reason}: killing every process (a running job goes back to its queue once its lease lapses)")
        for proc in self.procs:
            if not proc.first:
                self._signal(proc, signal.SIGKILL, group=True)

    def run(self) -> int:
        leftovers = self.lock.acquire()
        try:
            return self._run(leftovers)
        finally:
            try:
                self._sweep()
            finally:
                self.lock.release()

    def _run(self, leftovers: list[Started]) -> int:
        def on_signal(signum: int, _frame: Any) -> None:
            self._signals.append(signal.Signals(signum).name)  # handled in the loop: no output in a handler

        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, *RESTART_SIGNALS):
            signal.signal(sig, on_signal)
        if leftovers:
            self._stop_leftovers(leftovers)
        for proc in self._first:
            self._spawn(proc)
        self._started_at = time.monotonic()
        while True:
            self._read_output(0.1)
            self._reap()
            self._take_requests()
            self._respawn()
            now = time.monotonic()
            if not self._rest_started and self.stopping_since is None:
                self._start_rest(now)
            if self.stopping_since is None and any(p.returncode is not None and not p.restarting for p in self.procs):
                gone = next(p for p in self.procs if p.returncode is not None and not p.restarting)
                self.returncode = gone.returncode or 1
                self.request_stop(f"{gone.name} exited")
            if self.stopping_since is not None and self._stop_step(now):
                self._read_output(0)
                return self.returncode

    def _take_requests(self) -> None:
        """Act on signals caught since the last pass, and on stdout's reader going away."""
        while self._signals:
            name = self._signals.pop(0)
            if name in RESTART_SIGNALS_BY_NAME:
                self.restart_processes(web_only=name == "SIGUSR2")
            else:
                self.request_stop(name)
        if self.console.gone() and self.stopping_since is None:
            self.request_stop("stdout closed")

    def _start_rest(self, now: float) -> None:
        """Start everything but Redis once Redis accepts connections (or give up after a while)."""
        if not self._first or not self.redis_port or _listening(self.redis_port):
            for proc in self._rest:
                self._spawn(proc)
            self._rest_started = True
        elif now - self._started_at > REDIS_START_TIMEOUT:
            self.returncode = 1
            self.request_stop(f"Redis did not accept connections on port {self.redis_port}")

    def _stop_step(self, now: float) -> bool:
        """One pass of an ordered stop: Redis gets TERM once the rest exited; the stop timeout
        escalates to SIGKILL. True when every started process has exited."""
        assert self.stopping_since is not None
        if not self._first_stopped and all(p.popen is None or p.returncode is not None for p in self._rest):
            self._first_stopped = True
            for proc in self._first:
                self._signal(proc, signal.SIGTERM, group=False)
        if not self.forced and now - self.stopping_since > self.stop_timeout:
            self.force(f"Still running after {self.stop_timeout:.0f} s")
        if now - self.stopping_since > self.stop_timeout + 30:
            for proc in self._first:
                self._signal(proc, signal.SIGKILL, group=True)
        return all(p.popen is None or p.returncode is not None for p in self.procs)

    def _stop_leftovers(self, leftovers: list[Started]) -> None:
        """Stop processes an earlier ``bench start`` left running: Redis last, as in a normal stop."""
        names = ", ".join(f"{r.name} (pid {r.pid})" for r in leftovers)
        self.say(f"Stopping processes left running by an earlier bench start: {names}")
        for group in ([r for r in leftovers if r.name not in FIRST], [r for r in leftovers if r.name in FIRST]):
            for record in group:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(record.pid, signal.SIGTERM)
            deadline = time.monotonic() + (self.stop_timeout if group and group[0].name not in FIRST else 30)
            while any(is_alive(r) for r in group) and time.monotonic() < deadline and not self._signals:
                time.sleep(0.1)
            for record in group:
                if is_alive(record):
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(record.pid, signal.SIGKILL)

    def _read_output(self, timeout: float) -> None:
        for key, _ in self.selector.select(timeout):
            self._read(key.fd, key.data)

    def _read(self, fd: int, stream: _Stream) -> None:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if stream.log is not None and data:
            stream.log.write(data)
            stream.log.flush()
        stream.pending += data
        *lines, stream.pending = stream.pending.split(b"\n")
        if not data and stream.pending:
            lines, stream.pending = [*lines, stream.pending], b""
        for line in lines:
            self._print(stream.proc.name, line.decode("utf-8", "replace"), stream.proc.colour)
        if not data:
            self._close(fd, stream)

    def _close(self, fd: int, stream: _Stream) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(fd)
        stream.proc.streams.pop(fd, None)
        os.close(fd)
        if stream.log is not None:
            stream.log.close()

    def _reap(self) -> None:
        for proc in self.procs:
            if proc.popen is None or proc.returncode is not None:
                continue
            code = proc.popen.poll()
            if code is None:
                continue
            for fd, stream in list(proc.streams.items()):  # what it wrote before exiting
                self._read(fd, stream)
            proc.returncode = code
            self.say(f"{proc.name} stopped (rc={code})")

    def _sweep(self) -> None:
        """Kill whatever is left in the processes' groups (each ran in its own session), workers
        before Redis; never raises, whatever state stdout is in."""
        for proc in sorted(self.procs, key=lambda p: p.first):
            if proc.pid is None:
                continue
            try:
                os.killpg(proc.pid, signal.SIGKILL)
                self.say(f"killed leftover processes of {proc.name}")
            except (ProcessLookupError, PermissionError):
                pass
            if proc.popen is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.popen.wait(5)
            for fd, stream in list(proc.streams.items()):
                self._close(fd, stream)


def _listening(port: int) -> bool:
    from benchcelery.store.server import is_listening

    return is_listening(port)


def start(bench: Bench, procfile: Path | None = None, prefix: bool = True, stop_timeout: float | None = None) -> int:
    """Run the Procfile until Ctrl-C / TERM or until a process exits; returns the exit code."""
    from benchcelery.bench.config import Settings
    from benchcelery.deploy.plan import make_plan

    try:
        import honcho  # noqa: F401
    except ImportError:
        raise BenchError(f"bench start needs honcho (the run extra): {_install_hint('run')}") from None
    settings = Settings.from_bench(bench)
    plan = make_plan(settings)
    processes = parse_procfile(procfile or bench.root / "Procfile")
    if stop_timeout is None:
        stop_timeout = max(g.stop_wait for g in plan.workers)
    runner = ProcfileRunner(bench, processes, plan.redis_port, stop_timeout, prefix=prefix, colour=sys.stdout.isatty())
    return runner.run()


def _install_hint(extra: str) -> str:
    """The command that installs ``extra`` into the running environment: from the checkout this
    benchcelery was installed from (editable install), else from PyPI."""
    import shlex

    checkout = Path(__file__).resolve().parents[2]
    pip = f"{shlex.quote(sys.executable)} -m pip install"
    if (checkout / "pyproject.toml").is_file():
        return f"{pip} -e {shlex.quote(f'{checkout}[{extra}]')}"
    return f"{pip} {shlex.quote(f'benchcelery[{extra}]')}"
