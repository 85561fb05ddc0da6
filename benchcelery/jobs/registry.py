"""The failed-job registry and the status of jobs enqueued with an explicit id.

Failed records: per queue, a zset (job id -> failure time) plus a hash (job id -> JSON record),
trimmed on every write to ``rq_job_failure_ttl`` seconds and ``rq_failed_jobs_limit`` records.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from benchcelery.bench.keys import Keys

if TYPE_CHECKING:
    import redis

QUEUED, STARTED, FINISHED, FAILED = "queued", "started", "finished", "failed"
SCHEDULED, RETRYING = "scheduled", "retrying"  # waiting in the delayed set (broker/delayed.py)
WAITING = (QUEUED, STARTED, SCHEDULED, RETRYING)  # what deduplicate counts as "in queue already"

# Add one record and drop what is too old or over the cap, atomically.
# KEYS: zset, hash. ARGV: id, score, record, oldest allowed score, cap.
# allow-oom: a failure is recorded even when Redis is full (maxmemory under noeviction), rather
# than the job being acknowledged with no record of why it failed.
_RECORD_FAILURE = """#!lua flags=allow-oom
redis.call('SADD', KEYS[3], ARGV[6])
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
local drop = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[4])
local over = redis.call('ZCARD', KEYS[1]) - #drop - tonumber(ARGV[5])
if over > 0 then
  local extra = redis.call('ZRANGE', KEYS[1], #drop, #drop + over - 1)
  for _, id in ipairs(extra) do table.insert(drop, id) end
end
for i = 1, #drop, 500 do
  local chunk = {unpack(drop, i, math.min(i + 499, #drop))}
  redis.call('ZREM', KEYS[1], unpack(chunk))
  redis.call('HDEL', KEYS[2], unpack(chunk))
end
return #drop
"""


def site_of(job_id: str) -> str:
    """The site part of a ``<site>::<id>`` job id."""
    return job_id.split("::", 1)[0]


def record_failure(r: redis.Redis, keys: Keys, queue: str, record: dict[str, Any], limit: int, ttl: int) -> None:
    now = time.time()
    record["failed_at"] = now  # also its score: remove_failed_record matches on it
    # One script, allowed when Redis is out of memory; failed_queues lets a queue no config names be
    # found without SCAN.
    r.eval(
        _RECORD_FAILURE,
        3,
        keys.failed(queue),
        keys.failed_data(queue),
        keys.failed_queues,
        record["job_id"],
        repr(now),
        json.dumps(record, default=str),
        now - ttl,
        max(limit, 1),
        queue,
    )


def failed_ids(r: redis.Redis, keys: Keys, queue: str, site: str | None = None) -> list[str]:
    """Failed job ids of a queue (newest first), optionally of one site."""
    ids = [i.decode() for i in r.zrevrange(keys.failed(queue), 0, -1)]
    if site:
        prefix = f"{site}::"
        ids = [i for i in ids if i.startswith(prefix)]
    return ids


def failed_entries(r: redis.Redis, keys: Keys, queues: Iterable[str]) -> list[tuple[float, str, str]]:
    """(failure time, queue, job id) of every failed record of ``queues``, newest first across them."""
    queues = list(queues)
    pipe = r.pipeline(transaction=False)
    for q in queues:
        pipe.zrange(keys.failed(q), 0, -1, withscores=True)
    entries = [
        (float(score), q, raw.decode()) for q, pairs in zip(queues, pipe.execute(), strict=True) for raw, score in pairs
    ]
    return sorted(entries, key=lambda e: e[0], reverse=True)


def failed_queue_names(r: redis.Redis, keys: Keys) -> list[str]:
    """Every queue with a failed registry in Redis, configured or not (a forged message can name any
    queue, and its failure is recorded under that name)."""
    names = sorted(n.decode("utf-8", "replace") for n in r.smembers(keys.failed_queues))
    pipe = r.pipeline(transaction=False)
    for n in names:
        pipe.exists(keys.failed(n))
    return [n for n, found in zip(names, pipe.execute(), strict=True) if found]


def failed_counts(r: redis.Redis, keys: Keys, queues: Iterable[str]) -> dict[str, dict[str, int]]:
    """queue -> site -> number of failed records."""
    queues = list(queues)
    pipe = r.pipeline(transaction=False)
    for q in queues:
        pipe.zrange(keys.failed(q), 0, -1)
    out: dict[str, dict[str, int]] = {}
    for q, ids in zip(queues, pipe.execute(), strict=True):
        counts: dict[str, int] = {}
        for raw in ids:
            site = site_of(raw.decode())
            counts[site] = counts.get(site, 0) + 1
        out[q] = counts
    return out


def failed_records(r: redis.Redis, keys: Keys, queue: str, ids: list[str]) -> list[dict[str, Any]]:
    if not ids:
        return []
    return [json.loads(v) for v in r.hmget(keys.failed_data(queue), ids) if v is not None]


def find_failed(r: redis.Redis, keys: Keys, queues: Iterable[str], job_id: str) -> dict[str, Any] | None:
    for q in queues:
        raw = r.hget(keys.failed_data(q), job_id)
        if raw is not None:
            return json.loads(raw)
    return None


def remove_failed(r: redis.Redis, keys: Keys, queue: str, ids: list[str]) -> int:
    """Delete failed records; returns how many existed."""
    if not ids:
        return 0
    pipe = r.pipeline()
    pipe.zrem(keys.failed(queue), *ids)
    pipe.hdel(keys.failed_data(queue), *ids)
    removed, _ = pipe.execute()
    return int(removed)


# Remove a record only if it is still the one that failed at ARGV[2] (a retried job that failed
# again meanwhile has a newer record under the same id). KEYS: zset, hash. ARGV: id, failed_at.
_REMOVE_IF_SAME = """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) ~= tonumber(ARGV[2]) then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return 1
"""


def remove_failed_record(r: redis.Redis, keys: Keys, queue: str, record: dict[str, Any]) -> bool:
    """Delete this failure record of a job, but not a newer one of the same job id."""
    args = [record["job_id"], repr(float(record.get("failed_at") or 0))]
    return bool(r.eval(_REMOVE_IF_SAME, 2, keys.failed(queue), keys.failed_data(queue), *args))


def get_status(r: redis.Redis, keys: Keys, job_id: str) -> str | None:
    raw = r.get(keys.job_status(job_id))
    return raw.decode() if raw else None
