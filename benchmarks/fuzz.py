"""A long fuzz run of queue elements against a real worker (the fast subset is tests/test_fuzz.py).

    python -m benchmarks.fuzz --examples 300

Starts a private Redis and a bench, one `bench worker` and one `bench dashboard`, then tries
``--examples`` generated elements (tests/fuzzing.py): each waits in a queue nobody serves while
`jobs list`, `show-pending-jobs -v` and the dashboard's pages read it, then goes to the worker's
queue. Prints the elements tried, how they ended (run / recorded as failed), worker exits and any
problem (a traceback, a 500, an element neither run nor recorded).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchcelery.cli import cli
from benchcelery.store.server import free_port, start_server, stop_server
from tests.conftest import BenchHandle, make_bench, wait_until
from tests.fuzzing import Tally, build, mutation, try_element
from tests.test_dashboard import Dashboard, Session, make_token


def run(examples: int, seed: int | None) -> Tally:
    tally = Tally()
    with tempfile.TemporaryDirectory(prefix="bench-fuzz-") as tmp:
        port = free_port()
        server = start_server(port, Path(tmp))
        url = f"redis://127.0.0.1:{port}"
        bench = BenchHandle(make_bench(Path(tmp) / "bench", url), redis.Redis(port=port), url)
        try:
            bench.set_config(max_redeliveries=1)
            rt = bench.rt()
            worker = bench.start("worker", "--queue", "default")
            wait_until(lambda: bench.redis.zcard(rt.keys.workers), what="the worker to start")
            make_token(bench)
            session = Session(Dashboard(bench))
            session.login(make_token(bench))
            runner = CliRunner()

            def invoke(args: list[str]) -> Any:
                return runner.invoke(cli, ["--bench", str(bench.root), *args], catch_exceptions=True)

            state = {"worker": worker}

            @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
            @given(change=mutation(), n=st.integers(0, 10**6))
            def one_element(change: tuple[str, Any], n: int) -> None:
                if state["worker"].poll() is not None:  # count it, and serve the queue again
                    tally.worker_exits += 1
                    state["worker"] = bench.start("worker", "--queue", "default")
                try_element(bench, rt, state["worker"], invoke, session, build(rt, change, n), tally)

            if seed is not None:
                one_element = __import__("hypothesis").seed(seed)(one_element)
            one_element()
            if state["worker"].poll() is not None:
                tally.worker_exits += 1
        finally:
            bench.stop_all()
            stop_server(server)
    return tally


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fuzz", description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=300, help="elements to try (default 300)")
    parser.add_argument("--seed", type=int, default=None, help="Hypothesis seed (default: random)")
    args = parser.parse_args(argv)
    started = time.monotonic()
    tally = run(args.examples, args.seed)
    took = time.monotonic() - started
    print(f"elements tried: {tally.tried}")
    print(f"run: {tally.ran}, recorded as failed: {tally.failed}")
    print(f"worker exits: {tally.worker_exits}")
    print(f"problems: {len(tally.errors)}")
    for problem in tally.errors[:20]:
        print(f"  {problem[:300]}")
    print(f"took {took:.0f} s")
    return 0 if not tally.errors and not tally.worker_exits else 1


if __name__ == "__main__":
    sys.exit(main())
