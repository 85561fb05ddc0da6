"""``bench restart``: find how this bench runs and restart its scheduler and workers gracefully.

Looked for in this order (the first found is restarted; ``--supervisor`` / ``--systemd`` pick one):

1. ``supervisor_restart_cmd`` in the common config (Frappe's key): run as it is, in the bench;
2. supervisor: ``supervisorctl status`` (then ``sudo -n supervisorctl`` when refused) lists the
   ``<bench>-workers`` / ``<bench>-web`` groups; each program is restarted (stop = TERM, Celery's
   warm shutdown: the running job finishes within the program's ``stopwaitsecs``; then start), the
   programs in parallel so a long job holds back only its own queue's worker;
3. systemd: ``systemctl show -p Requires <bench>.target`` names the targets; ``<bench>-workers.target``
   (and ``<bench>-web.target``) is restarted, which restarts its units (``PartOf=``);
4. development: a running ``bench start`` (it holds ``config/pids/bench_start.lock``) gets SIGUSR1
   (SIGUSR2 with ``--web``) and restarts its processes, Redis excepted, without stopping.

Nothing found: BenchError naming what was looked for (never a silent success). The supervisorctl
and systemctl commands can be replaced with ``$BENCH_SUPERVISORCTL`` / ``$BENCH_SYSTEMCTL`` (a
command line, e.g. ``supervisorctl -c /etc/supervisord.conf``).
"""

from __future__ import annotations

import fcntl
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from benchcelery.bench.config import Settings
from benchcelery.bench.layout import Bench
from benchcelery.deploy.plan import make_plan, safe_name
from benchcelery.errors import BenchError

COMMAND_TIMEOUT = 30  # seconds for a status query; a restart itself waits as long as the stop waits
STATUS_LINE = re.compile(r"^(\S+)\s+(\S+)")


@dataclass
class Found:
    """What one manager of this bench answered: the lines said, or why it was not usable."""

    lines: list[str] = field(default_factory=list)
    missing: str | None = None  # why nothing of this bench was found there


def tool(env_var: str, name: str) -> list[str] | None:
    """The command line for ``name``: ``$env_var`` when set, else from PATH, else next to Python."""
    if os.environ.get(env_var):
        return shlex.split(os.environ[env_var])
    found = shutil.which(name) or next((str(p) for p in [Path(sys.executable).parent / name] if p.is_file()), None)
    return [found] if found else None


def run(argv: list[str], cwd: Path, timeout: float | None = COMMAND_TIMEOUT) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return subprocess.CompletedProcess(argv, 127, "", str(exc))


def with_sudo(argv: list[str]) -> list[str] | None:
    """``sudo -n ARGV`` when we are not root and sudo exists (never prompts), else None."""
    if os.geteuid() == 0 or not shutil.which("sudo"):
        return None
    return ["sudo", "-n", *argv]


# --- supervisor ---
def supervisor_status(bench: Bench) -> tuple[list[str] | None, list[tuple[str, str]], str | None]:
    """(the supervisorctl command that answered, [(process, state)], why not) — Frappe's order:
    plain supervisorctl, then sudo when refused."""
    ctl = tool("BENCH_SUPERVISORCTL", "supervisorctl")
    if ctl is None:
        return None, [], "supervisorctl is not installed"
    attempts = [ctl, *[s for s in [with_sudo(ctl)] if s]]
    why = ""
    for argv in attempts:
        result = run([*argv, "status"], bench.root)
        out = result.stdout + result.stderr
        refused = "Permission denied" in out or "refused connection" in out or "no such file" in out
        if not refused and STATUS_LINE.search(result.stdout or ""):
            rows = [(m.group(1), m.group(2)) for m in map(STATUS_LINE.match, result.stdout.splitlines()) if m]
            return argv, rows, None
        why = (out.strip().splitlines() or [f"exit {result.returncode}"])[-1]
    return None, [], f"supervisorctl status: {why[:200]}"


def supervisor_groups(settings: Settings, web: bool) -> list[str]:
    """The groups a restart acts on: scheduler + workers (and the web group), or only web."""
    from benchcelery.deploy.files import workers_group_name

    web_group = f"{safe_name(settings.bench.name)}-web"
    return [web_group] if web else [workers_group_name(settings), web_group]


def restart_supervisor(bench: Bench, web: bool) -> Found:
    ctl, rows, why = supervisor_status(bench)
    if ctl is None:
        return Found(missing=why)
    groups = supervisor_groups(Settings.from_bench(bench), web)
    programs: dict[str, dict[str, list[str]]] = {}
    for process, _state in rows:
        group, _, proc = process.partition(":")
        if group in groups and proc:
            # worker processes are <program>-<n> (numprocs): restart a program's processes together.
            programs.setdefault(group, {}).setdefault(re.sub(r"-\d+$", "", proc), []).append(process)
    if not programs:
        return Found(missing=f"supervisor has no group {' or '.join(groups)}")
    jobs = [(group, names) for group, progs in programs.items() for names in progs.values()]
    with ThreadPoolExecutor(max_workers=max(1, len(jobs))) as pool:
        results = list(pool.map(lambda job: run([*ctl, "restart", *job[1]], bench.root, timeout=None), jobs))
    lines, failures = [], []
    for group in groups:
        if group not in programs:
            continue
        mine = [(job, res) for job, res in zip(jobs, results, strict=True) if job[0] == group]
        bad = [res for _, res in mine if res.returncode != 0 or "ERROR" in res.stdout]
        count = sum(len(job[1]) for job, _ in mine)
        if bad:
            failures.append(f"{group}: {(bad[0].stdout + bad[0].stderr).strip().splitlines()[-1:]}")
        else:
            lines.append(f"Restarted supervisor group {group} ({count} process{'es' if count != 1 else ''})")
    if failures:
        raise BenchError(f"supervisorctl restart failed for {'; '.join(failures)}")
    return Found(lines)


# --- systemd ---
def systemd_requires(bench: Bench) -> tuple[list[str] | None, list[str], str | None]:
    ctl = tool("BENCH_SYSTEMCTL", "systemctl")
    if ctl is None:
        return None, [], "systemctl is not installed"
    target = f"{safe_name(bench.name)}.target"
    result = run([*ctl, "show", "-p", "Requires", "-p", "LoadState", target], bench.root)
    props = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    if result.returncode != 0 or props.get("LoadState", "loaded") != "loaded":
        why = (result.stderr.strip().splitlines() or [props.get("LoadState", f"exit {result.returncode}")])[-1]
        return None, [], f"systemd unit {target}: {why[:200]}"
    return ctl, props.get("Requires", "").split(), None


def restart_systemd(bench: Bench, web: bool) -> Found:
    name = safe_name(bench.name)
    ctl, requires, why = systemd_requires(bench)
    if ctl is None:
        return Found(missing=why)
    wanted = [f"{name}-web.target"] if web else [f"{name}-workers.target", f"{name}-web.target"]
    targets = [t for t in wanted if t in requires]
    if not targets:
        return Found(missing=f"{name}.target requires none of {', '.join(wanted)}")
    lines = []
    for target in targets:
        argv = [*ctl, "restart", target]
        result = run(argv, bench.root, timeout=None)
        sudo = with_sudo(argv)
        if result.returncode != 0 and sudo and "denied" in (result.stderr + result.stdout).lower():
            result = run(sudo, bench.root, timeout=None)
        if result.returncode != 0:
            raise BenchError(f"systemctl restart {target} failed: {result.stderr.strip()[:300]}")
        lines.append(f"Restarted systemd unit {target}")
    return Found(lines)


# --- development ---
def bench_start_pid(bench: Bench) -> int | None:
    """The pid of the ``bench start`` holding this bench's start lock, None when none runs."""
    from benchcelery.deploy.startlock import LOCK_FILE

    path = bench.config_path / "pids" / LOCK_FILE
    try:
        handle = open(path)  # noqa: SIM115 - closed below
    except OSError:
        return None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = handle.read().strip()
            return int(text) if text.isdigit() else None
        fcntl.flock(handle, fcntl.LOCK_UN)
        return None


def restart_bench_start(bench: Bench, web: bool) -> Found:
    pid = bench_start_pid(bench)
    if pid is None:
        return Found(missing="no bench start running (config/pids/bench_start.lock is not held)")
    sig = signal.SIGUSR2 if web else signal.SIGUSR1
    try:
        os.kill(pid, sig)
    except OSError as exc:
        return Found(missing=f"bench start (pid {pid}) cannot be signalled: {exc.strerror}")
    what = "its web processes" if web else "its scheduler and workers"
    return Found([f"Asked bench start (pid {pid}) to restart {what} ({sig.name}); its output shows them restart"])


# --- the command ---
def restart(bench: Bench, supervisor: bool = False, systemd: bool = False, web: bool = False) -> list[str]:
    """Restart this bench's processes; returns one line per group/unit restarted. BenchError when
    nothing of this bench is running (the message lists what was looked for)."""
    settings = Settings.from_bench(bench)
    custom = settings.get("supervisor_restart_cmd")
    if custom and not systemd:
        result = subprocess.run(str(custom), shell=True, cwd=bench.root, capture_output=True, text=True)
        if result.returncode != 0:
            raise BenchError(f"supervisor_restart_cmd failed (exit {result.returncode}): {result.stderr.strip()[:300]}")
        return [f"Ran supervisor_restart_cmd: {custom}"]
    managers = [("supervisor", restart_supervisor), ("systemd", restart_systemd), ("bench start", restart_bench_start)]
    if supervisor or systemd:
        managers = [m for m in managers if (m[0] == "supervisor" and supervisor) or (m[0] == "systemd" and systemd)]
    looked: list[str] = []
    for label, fn in managers:
        found = fn(bench, web)
        if found.lines:
            return found.lines + stop_wait_notes(settings, web)
        looked.append(f"{label}: {found.missing}")
    raise BenchError(f"Nothing of the bench {safe_name(bench.name)} is running to restart ({'; '.join(looked)})")


def stop_wait_notes(settings: Settings, web: bool) -> list[str]:
    """A line per queue whose stop wait is shorter than its time limit (workers.<q>.stop_timeout):
    a job running longer than the wait was killed by this restart and runs again from the start."""
    if web:
        return []
    return [
        f"Queue {g.queue}: a restart waits {g.stop_wait} s (workers.{g.queue}.stop_timeout), less than its "
        f"time limit {g.hard_limit} s: a job still running then is killed and runs again from the start"
        for g in make_plan(settings).workers
        if g.stop_wait < g.hard_limit
    ]
