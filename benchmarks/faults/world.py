"""The fault suite's world: the *broker* Redis (restarted with each scenario's options), the
*counter* Redis no fault touches, and a bench whose app counts every job's start and end there."""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import redis

from benchcelery.bench.keys import Keys
from benchcelery.bench.layout import Bench
from benchcelery.deploy.scaffold import add_app, create_bench
from benchcelery.store.server import find_server_binary, free_port, start_server, stop_server
from benchmarks import procs
from benchmarks.env import BIN

APP = "bcfault"
RUN = f"{APP}.tasks.run"
FAIL = f"{APP}.tasks.fail"
FAIL_LATE = f"{APP}.tasks.fail_late"
TICK = f"{APP}.tasks.tick"
ECHO = f"{APP}.tasks.echo"
STAMP = f"{APP}.tasks.stamp"
FLAKY = f"{APP}.tasks.flaky"
COUNTER_ENV = "BENCHMARK_FAULTS_COUNTER_URL"
BENCH_ID = "fl"
SITE = "f1.local"
BROKEN_SITE = "broken.local"
QUEUE = "default"
LEASE = 30  # the default job_lease (config.py); the suite runs with the default config
RESUMED_AFTER = 10  # "resumed": this many jobs ran after the fault ended (more than were in flight)


_TASKS = f'''"""Jobs of the fault suite: every start and every finish is counted on the counter Redis."""

import json
import os
import time

import redis

_client = None
_pid = 0


def _r():
    global _client, _pid
    if _client is None or _pid != os.getpid():
        _client = redis.Redis.from_url(os.environ["{COUNTER_ENV}"])
        _pid = os.getpid()
    return _client


def run(n, ms=5):
    r = _r()
    r.pipeline().hincrby("starts", n, 1).hset("running", n, os.getpid()).execute()
    time.sleep(ms / 1000)
    r.pipeline().incr("count").sadd("ran", n).hincrby("runs", n, 1).hdel("running", n).execute()


def fail(n, ms=0):
    _r().hincrby("starts", n, 1)
    raise RuntimeError(f"job {{n}} fails every time")


def fail_late(n, ms=0):
    _r().hincrby("starts", n, 1)
    time.sleep(ms / 1000)
    raise RuntimeError(f"job {{n}} fails after {{ms}} ms")


def tick():
    _r().rpush("ticks", repr(time.time()))


def echo(**kwargs):
    _r().rpush("echo", json.dumps(kwargs, default=str))


def stamp(n, ms=0):
    _r().hset("stamps", n, repr(time.time()))


def flaky(n, fails=0, ms=0):
    """Fails its first `fails` starts (counted here, so a start cut short by a kill counts too)."""
    r = _r()
    attempt, _, _ = r.pipeline().hincrby("starts", n, 1).rpush(f"at:{{n}}", repr(time.time())).hset(
        "running", n, os.getpid()
    ).execute()
    time.sleep(ms / 1000)
    if attempt <= fails:
        r.hdel("running", n)
        raise RuntimeError(f"job {{n}} fails its first {{fails}} attempts (this is start {{attempt}})")
    r.pipeline().incr("count").sadd("ran", n).hincrby("runs", n, 1).hdel("running", n).execute()
'''


@dataclass
class World:
    workdir: Path
    binary: str
    port: int
    counter_port: int
    counter_proc: subprocess.Popen[bytes]
    bench: Bench
    keys: Keys = field(default_factory=lambda: Keys(BENCH_ID))
    broker_proc: subprocess.Popen[bytes] | None = None
    broker_args: list[str] = field(default_factory=list)
    broker_dir: Path | None = None
    _b: redis.Redis | None = None
    _c: redis.Redis | None = None
    exits: list[str] = field(default_factory=list)  # workers that exited without being told to

    @property
    def b(self) -> redis.Redis:
        if self._b is None:
            self._b = redis.Redis(port=self.port, socket_timeout=30)
        return self._b

    @property
    def c(self) -> redis.Redis:
        if self._c is None:
            self._c = redis.Redis(port=self.counter_port)
        return self._c

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BENCH_", "FRAPPE_", "PYTHON"))}
        env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
        env[COUNTER_ENV] = f"redis://127.0.0.1:{self.counter_port}/0"
        return env

    # broker life cycle
    def start_broker(self, args: list[str], fresh: bool = True) -> None:
        if fresh:
            self.broker_dir = Path(tempfile.mkdtemp(prefix="broker-", dir=self.workdir))
            self.broker_args = list(args)
        assert self.broker_dir is not None
        self.broker_proc = start_server(self.port, self.broker_dir, binary=self.binary, args=self.broker_args)
        self._b = None

    def kill_broker(self) -> None:
        if self.broker_proc and self.broker_proc.poll() is None:
            self.broker_proc.kill()
            self.broker_proc.wait(10)

    def stop_broker(self) -> None:
        if self.broker_proc:
            stop_server(self.broker_proc)

    def close(self) -> None:
        self.stop_broker()
        stop_server(self.counter_proc)

    # workers
    def spawn(self, kind: str, name: str, num: int = 2, redis_url: str | None = None) -> subprocess.Popen[bytes]:
        """A worker (``redis_url``: reaching the broker at that address instead, e.g. through a proxy)."""
        args = ["worker"] if kind == "worker" else ["worker-pool", "--num-workers", str(num)]
        log = self.workdir / "logs" / f"{name}.log"
        log.parent.mkdir(exist_ok=True)
        env = {**self.env(), **({"BENCH_REDIS_QUEUE": redis_url} if redis_url else {})}
        return procs.spawn([str(BIN / "bench"), *args, "--quiet"], env, self.bench.root, log)

    def alive(self, proc: subprocess.Popen[bytes], name: str) -> bool:
        """Whether a worker is still running; an exit we did not cause is noted in ``exits``."""
        if proc.poll() is None:
            return True
        note = f"{name} (pid {proc.pid}) exited with {proc.returncode}"
        if note not in self.exits:
            self.exits.append(note)
        procs.LIVE.pop(proc.pid, None)
        return False

    def stop(self, proc: subprocess.Popen[bytes], name: str) -> None:
        """Warm shutdown of a worker we are done with (an earlier exit counts as a worker exit)."""
        if self.alive(proc, name):
            try:
                procs.stop(proc, 30)
            except procs.Timeout:
                pass

    def sigkill(self, proc: subprocess.Popen[bytes], name: str) -> None:
        """SIGKILL the worker's process group (as a supervisor does) and wait until all of it is gone."""
        self.alive(proc, name)
        members = procs.tree(proc.pid)
        procs.kill_group(proc, signal.SIGKILL)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        procs.LIVE.pop(proc.pid, None)
        psutil.wait_procs(members, timeout=10)

    def reset(self) -> None:
        self.b.flushall()
        self.c.flushall()
        self.exits = []


def create_world(workdir: Path) -> World:
    binary = find_server_binary()
    port = free_port()
    counter_port = free_port()
    while counter_port == port:
        counter_port = free_port()
    counter = start_server(counter_port, workdir / "counter", binary=binary)
    try:
        bench = create_bench(workdir / "bench", redis_url=f"redis://127.0.0.1:{port}/0")
        bench.update_config({"bench_id": BENCH_ID})
        app = bench.root / "apps" / APP
        app.mkdir(parents=True, exist_ok=True)
        (app / "__init__.py").write_text("")
        (app / "hooks.py").write_text("scheduler_events: dict = {}\n")
        (app / "tasks.py").write_text(_TASKS)
        add_app(bench, APP)
        bench.new_site(SITE, {})
        bench.new_site(BROKEN_SITE, {})
    except BaseException:
        stop_server(counter)
        raise
    return World(workdir, binary, port, counter_port, counter, bench)
