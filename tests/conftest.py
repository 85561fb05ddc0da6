"""Test fixtures: a private Redis server per session, a fresh bench per test, real `bench` processes.

Never uses a Redis server the tests did not start. Waits use deadlines, never bare sleeps.
"""

from __future__ import annotations

import configparser
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis

from benchcelery.bench.layout import Bench, write_json
from benchcelery.deploy.scaffold import add_app, create_bench
from benchcelery.store.server import free_port, start_server, stop_server

TESTS = Path(__file__).parent
BENCH_BIN = str(Path(sys.executable).parent / "bench")


def wait_until(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05, what: str = "") -> Any:
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(interval)


@dataclass
class RedisServer:
    port: int
    proc: subprocess.Popen[bytes]
    workdir: Path

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    workdir = tmp_path_factory.mktemp("redis")
    port = free_port()
    proc = start_server(port, workdir)
    yield RedisServer(port, proc, workdir)
    stop_server(proc)


@dataclass
class BenchHandle:
    """A bench on disk wired to the test Redis, with helpers to run real `bench` processes."""

    bench: Bench
    redis: redis.Redis
    url: str
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def root(self) -> Path:
        return self.bench.root

    @property
    def prefix(self) -> str:
        return f"bc:{self.bench.bench_id}:"

    @property
    def port(self) -> int:
        """The port of the bench's queue Redis (from its URL)."""
        return int(self.url.rsplit(":", 1)[1].split("/", 1)[0])

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BENCH_", "FRAPPE_"))}
        env.update(extra)
        return env

    def run(
        self, *args: str, timeout: float = 60, env: dict[str, str] | None = None, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run `bench ARGS` in the bench directory; returns the finished process."""
        return subprocess.run(
            [BENCH_BIN, *args],
            cwd=self.root,
            env=env or self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
        )

    def start(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start `bench ARGS` in the background (its own process group); stopped at teardown."""
        log = open(self.root / "logs" / f"proc-{len(self.procs)}.log", "wb")  # noqa: SIM115 - kept by the child
        proc = subprocess.Popen(
            [BENCH_BIN, *args],
            cwd=self.root,
            env=env or self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        proc.log_path = log.name  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    def output(self, proc: subprocess.Popen[bytes]) -> str:
        return Path(proc.log_path).read_text(errors="replace")  # type: ignore[attr-defined]

    def set_config(self, site: str | None = None, **values: Any) -> None:
        self.bench.update_config(values, site=site)

    def results(self, key: str) -> list[Any]:
        return [json.loads(v) for v in self.redis.lrange(f"test:{key}", 0, -1)]

    def wait_results(self, key: str, count: int, timeout: float = 30) -> list[Any]:
        wait_until(lambda: self.redis.llen(f"test:{key}") >= count, timeout, what=f"{count} results in {key}")
        return self.results(key)

    def rt(self, site: str = "site1.local") -> Any:
        """The bench's runtime in this (test) process, as application code would get it."""
        import benchcelery

        return benchcelery.init(site=site, bench_path=str(self.root))

    def enqueue(self, method: str, site: str = "site1.local", **kwargs: Any) -> Any:
        """Enqueue through the library, as application code would."""
        import benchcelery

        benchcelery.init(site=site, bench_path=str(self.root))
        return benchcelery.enqueue(method, **kwargs)

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(10)


def make_bench(path: Path, url: str, sites: tuple[str, ...] = ("site1.local", "site2.local")) -> Bench:
    bench = create_bench(path, redis_url=url, example_app=True)
    bench.update_config({"bench_id": f"t{uuid.uuid4().hex[:10]}"})
    shutil.copytree(
        TESTS / "apps" / "testapp", bench.root / "apps" / "testapp", ignore=shutil.ignore_patterns("__pycache__")
    )
    add_app(bench, "testapp")
    for site in sites:
        bench.new_site(site, {})
    write_json(bench.site_config_file(sites[0]), {"marker": sites[0]})
    return bench


def reset_runtime() -> None:
    """Forget the runtime and context a test built in this process, so the next test starts clean."""
    import benchcelery.runtime as runtime
    from benchcelery.context import local

    runtime._current = None
    local.reset()
    local.bench_path = None


@pytest.fixture
def bench(tmp_path: Path, redis_server: RedisServer) -> Iterator[BenchHandle]:
    handle = BenchHandle(make_bench(tmp_path / "bench", redis_server.url), redis_server.client(), redis_server.url)
    stale = handle.redis.keys("test:*")  # results of earlier tests (tests run one at a time)
    if stale:
        handle.redis.delete(*stale)
    yield handle
    handle.stop_all()
    reset_runtime()


def bench_on_free_port(path: Path) -> BenchHandle:
    """A bench at ``path`` whose redis_queue is a free local port nobody serves yet."""
    port = free_port()
    url = f"redis://127.0.0.1:{port}"
    return BenchHandle(make_bench(path, url), redis.Redis(port=port), url)


@pytest.fixture
def own_bench(tmp_path: Path) -> Iterator[BenchHandle]:
    """A bench whose redis_queue is a free local port nobody serves yet (the bench runs its own)."""
    handle = bench_on_free_port(tmp_path / "own")
    yield handle
    handle.stop_all()
    reset_runtime()


# --- helpers shared by several test files ----------------------------------------------------------
def pending_total(bench: BenchHandle) -> int:
    """Jobs waiting in the short, default and long queues, all sites together."""
    from benchcelery.jobs.inspect import count_pending

    counts = count_pending(bench.redis, bench.rt().keys, ["short", "default", "long"])
    return sum(sum(per_site.values()) for per_site in counts.values())


def burst(bench: BenchHandle, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    """Run ``bench worker --burst ARGS`` to its end (every job it found ran); fails the test otherwise."""
    result = bench.run("worker", "--burst", *args, timeout=timeout)
    assert result.returncode == 0, result.stderr
    return result


def alive(proc: psutil.Process) -> bool:
    """Whether ``proc`` still runs (a zombie does not)."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def resolve_program(command: str) -> str:
    """``command`` with its program path resolved: the bench script reached through a symlinked
    virtualenv (``.venv -> elsewhere``) and the same script reached directly compare equal."""
    program, _, args = command.partition(" ")
    return f"{Path(program).resolve()} {args}" if args else str(Path(program).resolve())


def ini(text: str) -> configparser.ConfigParser:
    """A supervisor or systemd file, parsed the way those tools read keys (case kept, no interpolation)."""
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(text)
    return parser
