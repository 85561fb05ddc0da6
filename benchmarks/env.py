"""The run's world: a private Redis on a free port, a bench with the benchmark app, the peer
(plain Celery, rq) modules, and the environment every child process gets.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import redis

from benchcelery.bench.layout import Bench
from benchcelery.deploy.scaffold import add_app, create_bench
from benchcelery.store.server import find_server_binary, free_port, start_server, stop_server
from benchmarks import apps

BIN = Path(sys.executable).parent
SITES = 20  # sites of the main bench (the operator-command backlog is spread over them)
SCHED_SITES = 500


def site_name(i: int) -> str:
    return f"s{i:03d}.local"


@dataclass
class Env:
    workdir: Path
    port: int
    redis_proc: subprocess.Popen[bytes]
    bench: Bench
    sched_bench: Bench
    peer_dir: Path
    redis_binary: str
    keep: bool = False
    _client: redis.Redis | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def redis(self) -> redis.Redis:
        if self._client is None:
            self._client = redis.Redis(port=self.port)
        return self._client

    @property
    def site(self) -> str:
        return site_name(0)

    def child_env(self) -> dict[str, str]:
        """Environment of every child: no BENCH_*/FRAPPE_* leaking in, the peer modules importable."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BENCH_", "FRAPPE_", "PYTHON"))}
        env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
        env["PYTHONPATH"] = os.pathsep.join([str(self.peer_dir), str(Path(__file__).resolve().parent.parent)])
        env[apps.URL_ENV] = self.url
        env["BENCHMARK_BENCH"] = str(self.bench.root)
        env["BENCHMARK_SCHED_BENCH"] = str(self.sched_bench.root)
        return env

    def flush(self) -> None:
        self.redis.flushall()

    def close(self) -> None:
        stop_server(self.redis_proc)
        if not self.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)


def _make_bench(path: Path, url: str, app_writer: object, app: str, sites: int) -> Bench:
    bench = create_bench(path, redis_url=url)
    # A short, fixed bench id keeps key names (and so message sizes) the same from run to run.
    bench.update_config({"bench_id": path.name})
    app_writer(bench.root / "apps")  # type: ignore[operator]
    add_app(bench, app)
    for i in range(sites):
        bench.new_site(site_name(i), {})
    return bench


def create(keep: bool = False) -> Env:
    workdir = Path(tempfile.mkdtemp(prefix="benchcelery-bench-"))
    port = free_port()
    while port == 6379:
        port = free_port()
    binary = find_server_binary()
    proc = start_server(port, workdir / "redis", binary=binary)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        bench = _make_bench(workdir / "bench", url, apps.write_bench_app, apps.BENCH_APP, SITES)
        sched = _make_bench(workdir / "schedbench", url, apps.write_sched_app, apps.SCHED_APP, SCHED_SITES)
        peer = workdir / "peer"
        apps.write_peer_modules(peer)
    except BaseException:
        stop_server(proc)
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    return Env(workdir, port, proc, bench, sched, peer, binary, keep)
