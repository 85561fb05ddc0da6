"""A network path that drops packets but keeps the sockets open (benchmarks/blackhole.py), then heals:
workers behind it never hang for good. During the blackhole a TERM still stops a worker and
``doctor`` shows the cut-off worker as stuck; after the heal the same process runs jobs again.

The fault suite's ``blackhole`` scenario counts the same fault job by job (`python -m benchmarks faults`).
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator

import pytest

from benchmarks.blackhole import Blackhole
from tests.conftest import BenchHandle, wait_until

LEASE = 12  # s; the blackhole lasts two leases
STOP_WITHIN = 30  # s; what a process manager waits after TERM at least (deploy/plan.py: hard limit + 30)


def tallies(bench: BenchHandle) -> dict[str, int]:
    ids = [i.decode() for i in bench.redis.smembers("test:tally")]
    return {i: int(bench.redis.get(f"test:tally:{i}") or 0) for i in ids}


@pytest.fixture
def proxy(bench: BenchHandle) -> Iterator[Blackhole]:
    hole = Blackhole(bench.port).start()
    yield hole
    hole.heal()
    hole.stop()


def test_a_worker_behind_a_blackhole_stops_on_term_shows_stuck_and_works_after_the_heal(
    bench: BenchHandle, proxy: Blackhole
) -> None:
    bench.set_config(job_lease=LEASE)
    env = bench.env(BENCH_REDIS_QUEUE=f"redis://127.0.0.1:{proxy.listen_port}")
    working = bench.start("worker", "--queue", "short", env=env)
    leaving = bench.start("worker", "--queue", "long", env=env)
    for i in range(3):
        bench.enqueue("testapp.tasks.tally", queue="short", run_id=f"before{i}")
    wait_until(lambda: len(tallies(bench)) == 3, timeout=60, what="jobs run before the blackhole")

    proxy.block("both")
    started = time.monotonic()
    leaving.send_signal(signal.SIGTERM)
    try:
        leaving.wait(STOP_WITHIN)
    except subprocess.TimeoutExpired:
        pytest.fail(f"TERM not honoured within {STOP_WITHIN} s during a blackhole:\n{bench.output(leaving)[-3000:]}")

    def stuck() -> bool:
        report = bench.run("doctor", "--site", "site1.local").stdout
        return "Worker stuck: short." in report

    wait_until(stuck, timeout=2 * LEASE + 6, interval=1, what="doctor showing the cut-off worker as stuck")
    wait_until(lambda: time.monotonic() - started > 2 * LEASE, timeout=2 * LEASE + 1, interval=0.5)
    assert working.poll() is None

    proxy.heal()
    for i in range(3):
        bench.enqueue("testapp.tasks.tally", queue="short", run_id=f"after{i}")
    wait_until(
        lambda: all(tallies(bench).get(f"after{i}") for i in range(3)),
        timeout=45,
        interval=0.5,
        what=f"jobs enqueued after the heal run on the same worker process:\n{bench.output(working)[-3000:]}",
    )
    assert working.poll() is None
    wait_until(lambda: "Worker stuck" not in bench.run("doctor", "--site", "site1.local").stdout, timeout=30)


def test_the_blackhole_proxy_drops_traffic_keeping_the_socket_open(bench: BenchHandle, proxy: Blackhole) -> None:
    import redis

    client = redis.Redis(port=proxy.listen_port, socket_timeout=0.5, retry=None)
    assert client.ping()
    proxy.block("up")
    with pytest.raises(redis.TimeoutError):
        client.ping()
    proxy.heal()  # the old flow lost bytes and stays dead; a new connection gets through
    assert redis.Redis(port=proxy.listen_port, socket_timeout=2).ping()


def test_acks_of_a_poll_whose_replies_never_came_go_with_the_next_poll(bench: BenchHandle) -> None:
    """kombu drops a poll connection whose reply is overdue without our read: the acks that rode
    with that poll must stay held (renewed) and go again, or their jobs run twice."""
    from benchcelery.broker.acks import PendingAcks
    from benchcelery.broker.delivery import Delivery

    delivery = Delivery(bench.redis, bench.rt().keys)
    acks = PendingAcks(lambda: delivery)
    acks.defer("tag-1", "token-1")
    assert acks.ride() == ([], [("tag-1", "token-1")])  # sent with a poll; its connection is then dropped
    acks.defer("tag-2", "token-2")
    assert set(acks.held()) == {"tag-1", "tag-2"}
    assert acks.ride()[1] == [("tag-1", "token-1"), ("tag-2", "token-2")]  # both go in the next fetch
