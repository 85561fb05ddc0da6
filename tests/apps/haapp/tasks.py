"""Every run is counted in the Redis named by site config ``tally_redis`` (not the bench's, which
fails over in these tests): ``ran`` (INCR), ``ran:ids`` (SADD of the job's id), ``done:at`` (time of
each run), so lost and doubled runs are counted exactly."""

from __future__ import annotations

import time

import redis

import benchcelery
from benchcelery.bench.hosts import host_name

_client: redis.Redis | None = None


def _tally() -> redis.Redis:
    global _client
    if _client is None:
        _client = redis.Redis.from_url(benchcelery.local.conf["tally_redis"])
    return _client


def count(n: int, seconds: float = 0.0) -> None:
    if seconds:
        time.sleep(seconds)
    pipe = _tally().pipeline(transaction=True)
    pipe.incr("ha:ran").sadd("ha:ran:ids", n).rpush("ha:done:at", time.time())
    pipe.sadd("ha:hosts", host_name(benchcelery.local.conf))
    pipe.execute()


def tick() -> None:
    _tally().rpush("ha:ticks", time.time())
