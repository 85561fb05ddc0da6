"""The scheduler's lease sweeper: started by beat's first tick (not the constructor),
stopped when it closes, and an unreachable Redis logged once per outage."""

from __future__ import annotations

import logging

import pytest
import redis

from benchcelery.broker.delivery import Delivery
from benchcelery.scheduler.beat import make_scheduler
from benchcelery.scheduler.sweeper import LeaseSweeper
from benchcelery.store.server import free_port
from tests.conftest import BenchHandle, wait_until


def test_sweeper_starts_with_the_first_tick_and_stops_on_close(bench: BenchHandle) -> None:
    scheduler = make_scheduler(bench.rt())
    scheduler.setup_schedule()
    assert not scheduler.sweeper.running  # building and setting up a scheduler start no thread
    scheduler.tick()  # what beat's loop calls
    wait_until(lambda: scheduler.sweeper.running, 5, what="the lease sweeper thread")
    scheduler.close()
    assert not scheduler.sweeper.running
    scheduler.sweeper.start()  # a closed scheduler does not come back to life
    assert not scheduler.sweeper.running


def test_sweeper_logs_an_outage_once(bench: BenchHandle, caplog: pytest.LogCaptureFixture) -> None:
    keys = bench.rt().keys
    gone = redis.Redis(port=free_port(), socket_connect_timeout=1)
    sweeper = LeaseSweeper(Delivery(gone, keys, 30), 30)
    with caplog.at_level(logging.INFO, logger="benchcelery.scheduler"):
        assert sweeper.recover() == [] and sweeper.recover() == [] and sweeper.recover() == []
        assert sweeper.outage
        sweeper.delivery = Delivery(bench.redis, keys, 30)
        assert sweeper.recover() == [] and sweeper.recover() == []
    messages = [r.getMessage() for r in caplog.records if r.name == "benchcelery.scheduler"]
    assert sum("Redis is unreachable" in m for m in messages) == 1, messages
    assert sum("reachable again" in m for m in messages) == 1, messages
    assert not sweeper.outage
