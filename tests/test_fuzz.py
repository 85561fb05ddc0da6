"""Property-based fuzzing of queue elements (issue 22): whatever one element of a queue holds, a
real `bench worker` never exits, the element ends run or recorded as failed (visible), and `jobs
list`, `show-pending-jobs -v` and the dashboard's pages answer without a traceback or a 500 while
it waits. A fast subset (one worker, a bounded number of examples); benchmarks/fuzz.py runs longer.
"""

from __future__ import annotations

from typing import Any

from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchcelery.cli import cli
from tests.conftest import BenchHandle, wait_until
from tests.fuzzing import Tally, build, mutation, try_element
from tests.test_dashboard import Dashboard, Session, make_token

EXAMPLES = 25


def start(bench: BenchHandle) -> tuple[Any, Any, Any]:
    """A worker of the default queue, a logged-in dashboard session, and `bench` in this process."""
    worker = bench.start("worker", "--queue", "default")
    wait_until(lambda: bench.redis.zcard(bench.rt().keys.workers), what="the worker to start")
    make_token(bench)
    session = Session(Dashboard(bench))
    session.login(make_token(bench))
    runner = CliRunner()

    def invoke(args: list[str]) -> Any:
        return runner.invoke(cli, ["--bench", str(bench.root), *args], catch_exceptions=True)

    return worker, session, invoke


def test_no_queue_element_stops_a_worker_a_command_or_a_page(bench: BenchHandle) -> None:
    bench.set_config(max_redeliveries=1)
    rt = bench.rt()
    worker, session, invoke = start(bench)
    tally = Tally()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(change=mutation(), n=st.integers(0, 10**6))
    def one_element(change: tuple[str, Any], n: int) -> None:
        try_element(bench, rt, worker, invoke, session, build(rt, change, n), tally)
        assert not tally.errors, tally.errors

    one_element()
    assert worker.poll() is None, bench.output(worker)[-3000:]
    assert tally.tried >= EXAMPLES and tally.ran + tally.failed == tally.tried, tally
