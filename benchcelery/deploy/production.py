"""The job part of Frappe's production set-up: ``bench setup production``, ``bench disable-production``,
``bench setup sudoers``, ``bench setup systemd --create-symlinks|--delete-symlinks|--stop``.

Each is a list of ``Step``s built first and then run (or, with ``--dry-run``, printed): every file
written or linked and every command run is one step, so a dry run shows exactly what a real one does.
The system directories (``/etc/supervisor/conf.d``, ``/etc/systemd/system``, ``/etc/sudoers.d``) are
under ``$BENCH_SYSTEM_ROOT`` (default ``/``), so tests and staging can run the real thing without root.
systemctl acts on the real ``/etc/systemd/system`` only, so its commands are skipped (and said so)
when the system root is not ``/``; supervisorctl talks to whichever supervisord includes the folder.
No nginx (benchcelery serves no web site).
"""

from __future__ import annotations

import os
import pwd
import shlex
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from benchcelery.bench.config import Settings
from benchcelery.bench.layout import Bench
from benchcelery.deploy.plan import safe_name
from benchcelery.deploy.restart import tool, with_sudo
from benchcelery.errors import BenchError

SYSTEM_ROOT_ENV = "BENCH_SYSTEM_ROOT"
# Where supervisor includes program files, in Frappe's order of preference.
SUPERVISOR_CONFDIRS = ("etc/supervisor/conf.d", "etc/supervisor.d", "etc/supervisord/conf.d", "etc/supervisord.d")


@dataclass
class Step:
    text: str  # what it does, as a line: "link A -> B", "run supervisorctl reread"
    action: Callable[[], str | None] | None = None  # returns an extra note to print, if any


def system_root() -> Path:
    return Path(os.environ.get(SYSTEM_ROOT_ENV) or "/")


def supervisor_confdir(root: Path) -> Path:
    for rel in SUPERVISOR_CONFDIRS:
        if (root / rel).is_dir():
            return root / rel
    raise BenchError(
        f"supervisor is not installed here: none of {', '.join('/' + d for d in SUPERVISOR_CONFDIRS)} exists under "
        f"{root} (install it: sudo apt install supervisor)"
    )


def user_warnings(user: str) -> list[str]:
    """Why running the bench's processes as ``user`` is probably a mistake (empty when fine)."""
    if user == "root":
        return [
            "Warning: the processes will run as root (a job's code could do anything to this machine); "
            "pass --user with the bench's owner, e.g. --user frappe"
        ]
    try:
        pwd.getpwnam(user)
    except KeyError:
        return [f"Warning: user {user} does not exist on this machine; the programs will fail to start as it"]
    return []


def run_steps(steps: list[Step], dry_run: bool, echo: Callable[[str], None]) -> None:
    for step in steps:
        if step.action is None:  # a step that only informs (skipped, nothing to do)
            echo(step.text[0].upper() + step.text[1:])
            continue
        if dry_run:
            echo(f"Would {step.text}")
            continue
        note = step.action()
        echo(step.text[0].upper() + step.text[1:] + (f" ({note})" if note else ""))


# --- building blocks ---
def write_step(path: Path, text: str, overwrite: bool) -> Step:
    from benchcelery.deploy.files import write_files

    def act() -> str | None:
        same = path.is_file() and path.read_text() == text
        write_files({path: text}, overwrite=overwrite)
        return "unchanged" if same else None

    return Step(f"write {path}", act)


def link_step(link: Path, target: Path, replace: bool) -> Step:
    def act() -> str | None:
        if link.is_symlink() and Path(os.readlink(link)) == target:
            return "already linked"
        if link.exists() or link.is_symlink():
            if not replace:
                raise BenchError(f"{link} exists and is not a link to {target}; use --yes to replace it")
            link.unlink()
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(target)
        return None

    return Step(f"link {link} -> {target}", act)


def unlink_step(link: Path, target: Path) -> Step | None:
    """Remove ``link`` when it points at ``target`` (a link elsewhere is somebody else's: left)."""
    if not link.is_symlink() or Path(os.readlink(link)) != target:
        return None

    def act() -> str | None:
        link.unlink()
        return None

    return Step(f"remove the link {link}", act)


def command_step(argv: list[str], cwd: Path, skip_reason: str | None = None) -> Step:
    text = f"run {shlex.join(argv)}"
    if skip_reason:
        return Step(f"skip `{shlex.join(argv)}` ({skip_reason})")

    def act() -> str | None:
        result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        sudo = with_sudo(argv)
        if result.returncode != 0 and sudo and "denied" in (result.stdout + result.stderr).lower():
            result = subprocess.run(sudo, cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if result.returncode != 0 or "ERROR" in result.stdout:
            last = (result.stderr.strip() or result.stdout.strip() or f"exit {result.returncode}").splitlines()[-1]
            raise BenchError(f"{shlex.join(argv)} failed: {last[:300]}")
        return None

    return Step(text, act)


def config_step(bench: Bench, updates: dict[str, object]) -> Step:
    shown = ", ".join(f"{k}={v}" for k, v in updates.items())

    def act() -> str | None:
        bench.update_config(updates)
        return None

    return Step(f"set {shown} in sites/common_site_config.json", act)


def _supervisorctl() -> list[str]:
    ctl = tool("BENCH_SUPERVISORCTL", "supervisorctl")
    if ctl is None:
        raise BenchError("supervisorctl is not installed (sudo apt install supervisor)")
    return ctl


def _systemctl(root: Path) -> tuple[list[str], str | None]:
    ctl = tool("BENCH_SYSTEMCTL", "systemctl") or ["systemctl"]
    skip = f"system root is {root}, not /" if root != Path("/") and not os.environ.get("BENCH_SYSTEMCTL") else None
    return ctl, skip


# --- supervisor ---
def supervisor_link(bench: Bench, root: Path) -> tuple[Path, Path]:
    return supervisor_confdir(root) / f"{safe_name(bench.name)}.conf", bench.config_path / "supervisor.conf"


def reload_supervisor_steps(bench: Bench) -> list[Step]:
    ctl = _supervisorctl()
    return [command_step([*ctl, "reread"], bench.root), command_step([*ctl, "update"], bench.root)]


# --- systemd ---
def systemd_links(bench: Bench, root: Path) -> list[tuple[Path, Path]]:
    """(link in /etc/systemd/system, unit file in config/systemd) for each generated unit."""
    folder = bench.config_path / "systemd"
    units = sorted(p for p in folder.iterdir() if p.suffix in (".service", ".target")) if folder.is_dir() else []
    return [(root / "etc/systemd/system" / p.name, p) for p in units]


def create_symlinks_steps(bench: Bench, replace: bool) -> list[Step]:
    root = system_root()
    links = systemd_links(bench, root)
    if not links:
        raise BenchError("config/systemd/ has no units: run `bench setup systemd` first")
    ctl, skip = _systemctl(root)
    return [
        *(link_step(link, unit, replace) for link, unit in links),
        command_step([*ctl, "daemon-reload"], bench.root, skip),
    ]


def delete_symlinks_steps(bench: Bench) -> list[Step]:
    root = system_root()
    steps = [s for s in (unlink_step(link, unit) for link, unit in systemd_links(bench, root)) if s]
    if not steps:
        return [Step(f"no unit of this bench is linked into {root / 'etc/systemd/system'}")]
    ctl, skip = _systemctl(root)
    return [*steps, command_step([*ctl, "daemon-reload"], bench.root, skip)]


def stop_steps(bench: Bench) -> list[Step]:
    """Stop the targets ``<bench>.target`` requires (Frappe's ``setup systemd --stop``)."""
    from benchcelery.deploy.restart import systemd_requires

    root = system_root()
    ctl, skip = _systemctl(root)
    if skip:
        return [command_step([*ctl, "stop", f"{safe_name(bench.name)}.target"], bench.root, skip)]
    ctl_found, requires, why = systemd_requires(bench)
    if ctl_found is None or not requires:
        raise BenchError(f"Nothing to stop: {why or f'{safe_name(bench.name)}.target requires no unit'}")
    return [command_step([*ctl_found, "stop", *requires], bench.root)]


# --- setup production / disable-production ---
def production_steps(bench: Bench, user: str, yes: bool) -> list[Step]:
    """Write the supervisor config (systemd units with ``restart_systemd_on_update``), link it into
    the system directory, reload, and record the choice in the common config."""
    from benchcelery.deploy.files import render_redis, render_supervisor, render_systemd

    settings = Settings.from_bench(bench)
    if settings.get("restart_supervisor_on_update") and settings.get("restart_systemd_on_update"):
        raise BenchError(
            "restart_supervisor_on_update and restart_systemd_on_update are both set: use one "
            "(bench set-config -g restart_systemd_on_update 0)"
        )
    root = system_root()
    redis_files = {p: t for p, t in render_redis(settings).items() if not p.exists()}
    if settings.get("restart_systemd_on_update"):
        files = {**redis_files, **render_systemd(settings, user=user)}
        steps = [write_step(p, t, yes) for p, t in files.items()]
        ctl, skip = _systemctl(root)
        folder = root / "etc/systemd/system"
        steps += [link_step(folder / p.name, p, yes) for p in files if p.parent.name == "systemd"]
        steps += [
            command_step([*ctl, "daemon-reload"], bench.root, skip),
            command_step([*ctl, "enable", "--now", f"{safe_name(bench.name)}.target"], bench.root, skip),
        ]
        return steps
    files = {**redis_files, **render_supervisor(settings, user=user)}
    link, conf = supervisor_link(bench, root)
    return [
        *(write_step(p, t, yes) for p, t in files.items()),
        config_step(bench, {"restart_supervisor_on_update": 1}),
        link_step(link, conf, yes),
        *reload_supervisor_steps(bench),
    ]


def disable_production_steps(bench: Bench) -> list[Step]:
    """Undo ``production_steps``: remove the links (supervisor, systemd) and reload."""
    root = system_root()
    steps: list[Step] = []
    try:
        link, conf = supervisor_link(bench, root)
    except BenchError:
        link = None
    if link is not None:
        removed = unlink_step(link, conf)
        if removed:
            steps += [removed, *reload_supervisor_steps(bench)]
    systemd = [s for s in (unlink_step(lnk, unit) for lnk, unit in systemd_links(bench, root)) if s]
    if systemd:
        ctl, skip = _systemctl(root)
        steps += [
            command_step([*ctl, "disable", "--now", f"{safe_name(bench.name)}.target"], bench.root, skip),
            *systemd,
            command_step([*ctl, "daemon-reload"], bench.root, skip),
        ]
    if not steps:
        raise BenchError(f"Production is not set up for this bench: nothing of it is linked under {root / 'etc'}")
    return steps


# --- sudoers ---
def sudoers_text(user: str, bench: Bench) -> str:
    supervisorctl = shutil.which("supervisorctl") or "/usr/bin/supervisorctl"
    systemctl = shutil.which("systemctl") or "/usr/bin/systemctl"
    name = safe_name(bench.name)
    return (
        f"# Written by `bench setup sudoers {user}` for the bench {bench.root}: lets {user} run\n"
        "# supervisorctl and systemctl for this bench's units without a password (`bench restart`\n"
        "# tries `sudo -n` when refused).\n"
        f"Defaults:{user} !requiretty\n"
        f"{user} ALL = (root) NOPASSWD: {supervisorctl}\n"
        f"{user} ALL = (root) NOPASSWD: {systemctl} restart {name}*, {systemctl} stop {name}*, "
        f"{systemctl} start {name}*, {systemctl} daemon-reload\n"
    )


def sudoers_path(user: str) -> Path:
    # sudo skips files in sudoers.d whose name holds a '.' or ends with '~'.
    return system_root() / "etc/sudoers.d" / f"benchcelery-{safe_name(user).replace('.', '_')}"


def sudoers_steps(bench: Bench, user: str) -> list[Step]:
    path = sudoers_path(user)
    text = sudoers_text(user, bench)

    def act() -> str | None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        os.chmod(tmp, 0o440)
        visudo = shutil.which("visudo")
        if visudo:
            check = subprocess.run([visudo, "-cf", str(tmp)], capture_output=True, text=True)
            if check.returncode != 0:
                tmp.unlink()
                raise BenchError(f"visudo refused the sudoers lines: {check.stdout.strip()[:300]}")
        os.replace(tmp, path)
        return "checked with visudo" if visudo else "visudo not installed: not checked"

    return [Step(f"write {path} (mode 0440)", act)]
