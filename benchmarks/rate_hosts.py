"""A rate limit held by workers on two "hosts": ``python -m benchmarks.rate_hosts`` (as root).

    python -m benchmarks.rate_hosts [--jobs 300] [--limit 10/s] [--source config,decorator]
                                    [--workers-per-host 2] [--delay-ms 0] [--output FILE]

Two network namespaces stand for two hosts: a bridge in the root namespace holds ``<net>.1/24``,
where the benchmark's Redis listens (and on 127.0.0.1, for this process); each namespace has a
veth pair into the bridge and the address ``<net>.2`` / ``<net>.3``. ``--workers-per-host`` ``bench
worker`` processes run inside each namespace (``ip netns exec``) against ``redis://<net>.1``; they
share nothing with each other but that Redis (and the bench's files, as a shared deploy would). With
``--delay-ms`` each host's link delays its packets (netem; a LAN-like round trip).

A backlog of ``--jobs`` no-op jobs of one method is enqueued first; the method is limited to
``--limit`` by ``rate_limits`` in common_site_config.json (``config``) or by its
``@benchcelery.rate_limit`` decorator (``decorator``). Each job records the time it started and its
host (the namespaces share the kernel's clock, so the stamps compare). Reported: the overall rate
(starts - 1 over first to last start) against the limit, starts in each full one-second window from
the first start (min/max), the most starts in any one-second span, and each host's share.

The namespaces, bridge and veths are removed on exit, also after a failure or Ctrl-C (names start
with ``--prefix``; leftovers of a killed run under the same prefix are removed at start).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import redis

from benchcelery.bench.schema import parse_rate
from benchcelery.deploy.scaffold import add_app, create_bench
from benchcelery.store.server import free_port, start_server, stop_server
from benchmarks.env import BIN

APP = "rateapp"
METHOD = {"config": f"{APP}.tasks.stamp", "decorator": f"{APP}.tasks.stamp_limited"}
_TASKS = '''"""Jobs of the two-host rate benchmark: each records its host and when it started."""

import json
import os
import time

import benchcelery
import redis

_client = None


def _record():
    global _client
    if _client is None:
        _client = redis.Redis.from_url(os.environ["RATE_REDIS"])
    _client.rpush("rate:ran", json.dumps([os.environ.get("RATE_HOST", "?"), time.time()]))


def stamp():
    _record()


@benchcelery.rate_limit(%(limit)r)
def stamp_limited():
    _record()
'''


def _run(*cmd: str) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


class Hosts:
    """Two namespaces on a bridge; ``names`` hold what ``down`` removes."""

    def __init__(self, prefix: str, net: str, delay_ms: float) -> None:
        self.prefix, self.net, self.delay_ms = prefix, net, delay_ms
        self.bridge = f"{prefix}br"
        self.server_ip = f"{net}.1"
        self.hosts = {f"{prefix}-a": f"{net}.2", f"{prefix}-b": f"{net}.3"}

    def up(self) -> None:
        self.down()  # leftovers of a killed run under the same names
        if f" {self.server_ip}/" in _run("ip", "-o", "addr", "show"):
            raise RuntimeError(f"{self.server_ip} is in use on this machine: pick another --net")
        _run("ip", "link", "add", self.bridge, "type", "bridge")
        _run("ip", "addr", "add", f"{self.server_ip}/24", "dev", self.bridge)
        _run("ip", "link", "set", self.bridge, "up")
        for i, (ns, address) in enumerate(self.hosts.items()):
            outer, inner = f"{self.prefix}{i}o", f"{self.prefix}{i}i"
            _run("ip", "netns", "add", ns)
            _run("ip", "link", "add", outer, "type", "veth", "peer", "name", inner)
            _run("ip", "link", "set", outer, "master", self.bridge)
            _run("ip", "link", "set", outer, "up")
            _run("ip", "link", "set", inner, "netns", ns)
            inside = ("ip", "netns", "exec", ns)
            _run(*inside, "ip", "addr", "add", f"{address}/24", "dev", inner)
            _run(*inside, "ip", "link", "set", inner, "up")
            _run(*inside, "ip", "link", "set", "lo", "up")
            if self.delay_ms:
                _run(*inside, "tc", "qdisc", "add", "dev", inner, "root", "netem", "delay", f"{self.delay_ms}ms")

    def down(self) -> None:
        """Remove the namespaces (their veth ends go with them, and so do the peers) and the bridge."""
        for ns in self.hosts:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        for i in range(len(self.hosts)):
            subprocess.run(["ip", "link", "del", f"{self.prefix}{i}o"], capture_output=True)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)

    def left(self) -> list[str]:
        """What of ours still exists (empty after ``down``)."""
        names = _run("ip", "netns", "list") + _run("ip", "-o", "link", "show")
        return [n for n in [*self.hosts, self.bridge] if n in names]


@contextmanager
def hosts(prefix: str, net: str, delay_ms: float) -> Iterator[Hosts]:
    made = Hosts(prefix, net, delay_ms)
    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # through the finally below
    try:
        made.up()
        yield made
    finally:
        made.down()
        signal.signal(signal.SIGTERM, previous)


def _env(url: str, host: str = "") -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BENCH_", "FRAPPE_"))}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["RATE_REDIS"] = url
    env["RATE_HOST"] = host
    return env


def run(workdir: Path, net: Hosts, source: str, jobs: int, limit: str, per_host: int) -> dict[str, Any]:
    port = free_port()
    # protected mode off: the bridge is reachable from this machine's namespaces only
    bind = ["--bind", net.server_ip, "127.0.0.1", "--protected-mode", "no"]
    server = start_server(port, workdir / "redis", args=bind)
    url = f"redis://{net.server_ip}:{port}/0"
    workers: list[subprocess.Popen[bytes]] = []
    try:
        bench = create_bench(workdir / "bench", redis_url=url)
        bench.update_config({"bench_id": "ratehosts"})
        app = bench.root / "apps" / APP
        app.mkdir(parents=True, exist_ok=True)
        (app / "__init__.py").write_text("")
        (app / "hooks.py").write_text("scheduler_events: dict = {}\n")
        (app / "tasks.py").write_text(_TASKS % {"limit": limit})
        add_app(bench, APP)
        bench.new_site("r.local", {})
        if source == "config":
            bench.update_config({"rate_limits": {METHOD[source]: limit}})
        logs = bench.root / "logs"
        logs.mkdir(exist_ok=True)
        for ns in net.hosts:  # each host reaches the Redis before any job is enqueued
            _run("ip", "netns", "exec", ns, sys.executable, "-c", f"import redis; redis.Redis.from_url({url!r}).ping()")
        code = (
            "import benchcelery, sys\n"
            "benchcelery.init(site='r.local', bench_path=sys.argv[1])\n"
            f"benchcelery.enqueue_many([dict(method={METHOD[source]!r}) for _ in range({jobs})])\n"
        )
        subprocess.run([sys.executable, "-c", code, str(bench.root)], check=True, env=_env(url))
        for ns in net.hosts:
            for k in range(per_host):
                log = open(logs / f"{ns}-{k}.log", "wb")  # noqa: SIM115 - the child keeps it
                workers.append(
                    subprocess.Popen(
                        ["ip", "netns", "exec", ns, str(BIN / "bench"), "worker", "--quiet", "--queue", "default"],
                        cwd=bench.root,
                        env=_env(url, ns),
                        stdout=log,
                        stderr=log,
                        start_new_session=True,
                    )
                )
        r = redis.Redis(port=port)
        deadline = time.time() + jobs * parse_rate(limit) / 1000 * 2 + 120
        while r.llen("rate:ran") < jobs:
            if time.time() > deadline or any(w.poll() is not None for w in workers):
                raise RuntimeError(f"{r.llen('rate:ran')}/{jobs} jobs ran; workers' logs in {logs}")
            time.sleep(0.1)
        ran = [json.loads(x) for x in r.lrange("rate:ran", 0, -1)]
        return summary(ran, limit, source, per_host * len(net.hosts), net.delay_ms)
    finally:
        for w in workers:
            with suppress(ProcessLookupError):
                os.killpg(w.pid, signal.SIGKILL)
            w.wait(10)
        stop_server(server)


def summary(ran: list[list[Any]], limit: str, source: str, workers: int, delay_ms: float) -> dict[str, Any]:
    target = 1000 / parse_rate(limit)
    starts = sorted(t for _, t in ran)
    span = starts[-1] - starts[0]
    achieved = (len(starts) - 1) / span
    per_second = Counter(int(t - starts[0]) for t in starts)
    full = [per_second[k] for k in range(int(span))]  # whole seconds from the first start
    j, most = 0, 0
    for i, t in enumerate(starts):  # the most starts in any span [t, t + 1 s)
        while j < len(starts) and starts[j] < t + 1:
            j += 1
        most = max(most, j - i)
    return {
        "source": source,
        "limit": limit,
        "workers": workers,
        "hosts": 2,
        "delay_ms": delay_ms,
        "jobs": len(starts),
        "span_s": round(span, 2),
        "achieved_per_s": round(achieved, 3),
        "error_pct": round(100 * (achieved - target) / target, 2),
        "per_second_min": min(full) if full else None,
        "per_second_max": max(full) if full else None,
        "most_in_any_second": most,
        "per_host": dict(sorted(Counter(h for h, _ in ran).items())),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.rate_hosts")
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--limit", default="10/s")
    parser.add_argument("--source", default="config,decorator")
    parser.add_argument("--workers-per-host", type=int, default=2)
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument("--net", default="10.77.0", help="the /24 of the bridge (first three octets)")
    parser.add_argument("--prefix", default="bcrh", help="names of the namespaces, bridge and veths")
    parser.add_argument("--output", default="")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("rate_hosts needs root (ip netns)", file=sys.stderr)
        return 2
    results = []
    with hosts(args.prefix, args.net, args.delay_ms) as net:
        for source in args.source.split(","):
            with tempfile.TemporaryDirectory(prefix=f"rate-hosts-{source}-") as tmp:
                row = run(Path(tmp), net, source, args.jobs, args.limit, args.workers_per_host)
            print(json.dumps(row), flush=True)
            results.append(row)
    left = Hosts(args.prefix, args.net, 0).left()
    if left:
        print(f"left behind: {left}", file=sys.stderr)
        return 1
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
