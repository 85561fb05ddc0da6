"""The main job end to end: ``python -m benchcelery.demo [DIR]`` (what ``./run-demo.sh`` runs).

Creates a bench with one site and the example app in DIR (default ./demo-bench, recreated), starts a
private Redis (redis-server/valkey-server from PATH, else the embedded one), enqueues jobs on the
short, default and long queues, drains them with ``bench worker --burst`` and shows the result.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from benchcelery.redis_server import find_server_binary, free_port, start_server, stop_server

BENCH = str(Path(sys.executable).parent / "bench")


def step(title: str, *args: str, cwd: Path, check: bool = True) -> str:
    print(f"\n$ bench {' '.join(args)}    # {title}", flush=True)
    result = subprocess.run([BENCH, *args], cwd=cwd, capture_output=True, text=True, timeout=300)
    output = (result.stdout + result.stderr).rstrip()
    if output:
        print(output, flush=True)
    if check and result.returncode != 0:
        raise SystemExit(f"demo failed: bench {' '.join(args)} exited {result.returncode}")
    return result.stdout


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
        step("a job that fails", "enqueue", "jobs_demo.tasks.fail", "--queue", "short", cwd=root)
        step("what is waiting", "show-pending-jobs", cwd=root, check=False)
        step("drain every queue, then exit", "worker", "--burst", "--quiet", cwd=root)
        print("\n$ cat logs/jobs_demo.log    # what the jobs did")
        print((root / "logs" / "jobs_demo.log").read_text().rstrip())
        step("nothing pending; the failed job is kept", "show-pending-jobs", cwd=root, check=False)
        step("why it failed", "jobs", "list", "--state", "failed", cwd=root, check=False)
    finally:
        stop_server(server)
        shutil.rmtree(redis_dir, ignore_errors=True)
    print(f"\nDone. The bench is in {root}; start it for real with: cd {root} && bench start")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
