"""The main job end to end: ``python -m benchcelery.demo [DIR]`` (what ``./run-demo.sh`` runs).

Creates a bench with one site and the example app in DIR (default ./demo-bench, recreated), starts a
private Redis (redis-server/valkey-server from PATH, else the embedded one), enqueues jobs on the
short, default and long queues, drains them with ``bench worker --burst`` and shows the result.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from benchcelery.store.server import find_server_binary, free_port, start_server, stop_server

BENCH = str(Path(sys.executable).parent / "bench")


def step(title: str, *args: str, cwd: Path, check: bool = True, short_tracebacks: bool = False) -> str:
    print(f"\n$ {shlex.join(['bench', *args])}    # {title}", flush=True)
    result = subprocess.run([BENCH, *args], cwd=cwd, capture_output=True, text=True, timeout=300)
    output = (result.stdout + result.stderr).rstrip()
    if short_tracebacks:
        output = without_tracebacks(output)
    if output:
        print(output, flush=True)
    if check and result.returncode != 0:
        raise SystemExit(f"demo failed: bench {' '.join(args)} exited {result.returncode}")
    return result.stdout


_JOB_ERROR = re.compile(r"ERROR/.*\] Task (\S+)\[(\S+)\] raised unexpected")


def without_tracebacks(output: str) -> str:
    """Worker output with each failed job's log record and traceback folded into one line (the failed
    registry keeps the traceback: ``bench jobs show``)."""
    lines: list[str] = []
    job: tuple[str, str] | None = None
    skipping = False
    for line in output.splitlines():
        match = _JOB_ERROR.search(line)
        if match:
            job = (match.group(1), match.group(2))
        elif line.startswith("Traceback (most recent call last):"):
            skipping = True
        elif skipping and not line.startswith(" "):
            skipping = False
            method, job_id = job or ("a job", "JOB_ID")
            lines.append(f"{method} failed, as intended: {line} (traceback: bench jobs show {job_id})")
            job = None
        elif not skipping:
            lines.append(line)
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    root = Path(argv[0] if argv else "demo-bench").resolve()
    if root.exists():
        shutil.rmtree(root)
    binary = find_server_binary()
    port = free_port()
    redis_dir = Path(tempfile.mkdtemp(prefix="benchcelery-demo-redis-"))
    print(f"Starting a private Redis: {binary} on 127.0.0.1:{port}", flush=True)
    server = start_server(port, redis_dir, binary=binary)
    try:
        step(
            "create the bench",
            "init",
            str(root),
            "--example-app",
            "--redis-url",
            f"redis://127.0.0.1:{port}",
            cwd=root.parent,
        )
        step("create a site", "new-site", "site1.local", cwd=root)
        step("make it the default site", "use", "site1.local", cwd=root)
        for queue in ("short", "default", "long"):
            for n in (1, 2):
                step(
                    f"a job on {queue}",
                    "enqueue",
                    "jobs_demo.tasks.say",
                    "--queue",
                    queue,
                    "--kwargs",
                    f'{{"message": "job {n}", "label": "{queue}"}}',
                    cwd=root,
                )
        step("a job that fails on purpose", "enqueue", "jobs_demo.tasks.fail", "--queue", "short", cwd=root)
        step("what is waiting", "show-pending-jobs", cwd=root, check=False)
        step("drain every queue, then exit", "worker", "--burst", "--quiet", cwd=root, short_tracebacks=True)
        print("\n$ cat logs/jobs_demo.log    # what the jobs did")
        print((root / "logs" / "jobs_demo.log").read_text().rstrip())
        step("nothing pending; the failed job is kept", "show-pending-jobs", cwd=root, check=False)
        step("why it failed", "jobs", "list", "--state", "failed", cwd=root, check=False)
    finally:
        stop_server(server)
        shutil.rmtree(redis_dir, ignore_errors=True)
    activate = shlex.quote(str(Path(BENCH).parent / "activate"))
    print(
        f"\nDone. The bench is in {root}; start it for real with: cd {shlex.quote(str(root))} && "
        f"{shlex.quote(BENCH)} start\n(or put bench on PATH first: source {activate})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
