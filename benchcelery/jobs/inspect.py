"""Reading jobs straight from Redis without disturbing workers: counts, listings, lookups.

Waiting messages are kombu's JSON envelopes in the queue lists (see keys.py); a job's site is the
part of its id before ``::`` and the id is the first ``"id": "`` in the envelope (Celery's header
order), so scripts can match a site without decoding JSON. Counts come from the per-site counters
our transport keeps (see transport.py), checked against the lists' lengths.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from benchcelery.bench.keys import UNKNOWN_SITE
from benchcelery.broker.delivery import decode_meta
from benchcelery.jobs import registry
from benchcelery.jobs.model import Job

if TYPE_CHECKING:
    import redis

    from benchcelery.bench.keys import Keys
    from benchcelery.runtime import Runtime


# Exact re-count of one queue: KEYS[1] = its pending-count hash, KEYS[2..] = its lists. Tallies
# every message by site, rewrites the hash, returns it flat (site, n, site, n, ...). Atomic.
_RECOUNT = """
local counts = {}
for k = 2, #KEYS do
  local len = redis.call('LLEN', KEYS[k])
  for start = 0, len - 1, 2000 do
    local items = redis.call('LRANGE', KEYS[k], start, start + 1999)
    for _, item in ipairs(items) do
      local site = string.match(item, '"id": "([^":]*)::') or '?'
      counts[site] = (counts[site] or 0) + 1
    end
  end
end
redis.call('DEL', KEYS[1])
local out = {}
for site, n in pairs(counts) do
  redis.call('HSET', KEYS[1], site, n)
  table.insert(out, site); table.insert(out, n)
end
return out
"""

# KEYS: queue lists. ARGV[1]: needle. Returns {key index, raw message} of the first match or {}.
_FIND = """
for k = 1, #KEYS do
  local len = redis.call('LLEN', KEYS[k])
  for start = 0, len - 1, 2000 do
    local items = redis.call('LRANGE', KEYS[k], start, start + 1999)
    for _, item in ipairs(items) do
      if string.find(item, ARGV[1], 1, true) then return {k, item} end
    end
  end
end
return {}
"""


def snapshot(r: redis.Redis, reads: Any) -> list[Any]:
    """The replies of the reads ``reads(pipe)`` queues, in one MULTI (a consistent view). Redis
    refuses every command of a MULTI while it is out of memory (maxmemory, noeviction), reads
    too: then the same reads go in a plain pipeline, so diagnostics still answer."""
    import redis

    pipe = r.pipeline(transaction=True)
    reads(pipe)
    try:
        return list(pipe.execute())
    except redis.ResponseError as exc:
        if "maxmemory" not in str(exc):
            raise
    pipe = r.pipeline(transaction=False)
    reads(pipe)
    return list(pipe.execute())


def count_pending(
    r: redis.Redis, keys: Keys, queues: Iterable[str], site: str | None = None
) -> dict[str, dict[str, int]]:
    """queue -> site -> number of waiting jobs (all priority buckets).

    Answered from the per-site counters the transport keeps (O(sites)); when their sum disagrees
    with the lists' lengths (a producer that bypassed them, or a worker caught between taking a
    message and parking it), the queue is re-counted exactly and the counters repaired.
    ``site`` is accepted for symmetry; every site's count costs the same.
    """
    queues = list(queues)

    def reads(pipe: Any) -> None:
        for q in queues:
            pipe.hgetall(keys.pending_counts(q))
            for key in keys.queue_lists(q):
                pipe.llen(key)

    replies = snapshot(r, reads)
    width = 1 + len(keys.queue_lists("x"))
    out: dict[str, dict[str, int]] = {}
    recount = r.register_script(_RECOUNT)
    for i, q in enumerate(queues):
        raw, *lengths = replies[i * width : (i + 1) * width]
        counts = {k.decode(): int(v) for k, v in raw.items() if int(v)}
        if sum(counts.values()) != sum(lengths) or any(v < 0 for v in counts.values()):
            flat = recount(keys=[keys.pending_counts(q), *keys.queue_lists(q)])
            counts = {
                (n.decode() if isinstance(n, bytes) else str(n)): int(c)
                for n, c in zip(flat[::2], flat[1::2], strict=True)
            }
        out[q] = counts
    return out


def decode_message(raw: bytes) -> dict[str, Any]:
    """A kombu envelope -> {id, site, method, kwargs, event, enqueued_at, headers}; an element that
    is not one (it waits to be recorded as failed by a worker) is described as such, never raises."""
    try:
        return message_info(json.loads(raw))
    except (ValueError, TypeError, AttributeError):
        return _unreadable("", raw)


def _unreadable(tag: str, raw: bytes) -> dict[str, Any]:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    return {
        "id": f"{UNKNOWN_SITE}::{tag or 'malformed'}",
        "site": UNKNOWN_SITE,
        "method": f"(not a valid message: {text[:60]!r})",
        "kwargs": {},
        "event": None,
        "enqueued_at": None,
        "headers": {},
        "priority": None,
    }


def message_info(msg: dict[str, Any]) -> dict[str, Any]:
    """What a decoded kombu envelope says about its job (raises TypeError if it is not one)."""
    if not isinstance(msg, dict):
        raise TypeError("not a message")
    headers: dict[str, Any] = msg.get("headers") or {}
    if not isinstance(headers, dict):
        raise TypeError("not a message")
    kwargs: dict[str, Any] = {}
    properties: dict[str, Any] = msg["properties"] if isinstance(msg.get("properties"), dict) else {}
    try:
        body = msg.get("body", "")
        if properties.get("body_encoding") == "base64":
            body = base64.b64decode(body)
        decoded = json.loads(body)
        if isinstance(decoded, list) and len(decoded) >= 2 and isinstance(decoded[1], dict):
            kwargs = decoded[1]
    except (ValueError, TypeError):
        kwargs = {}
    job_id = str(headers.get("id") or "")
    return {
        "id": job_id,
        "site": headers.get("site") or (registry.site_of(job_id) if "::" in job_id else UNKNOWN_SITE),
        "method": headers.get("method") or headers.get("shadow") or headers.get("task") or "",
        "kwargs": kwargs,
        "event": headers.get("event"),
        "enqueued_at": headers.get("enqueued_at"),
        "headers": headers,
        "priority": properties.get("priority"),
    }


def iter_pending(r: redis.Redis, keys: Keys, queue: str, site: str | None = None, chunk: int = 1000) -> Iterator[Job]:
    """Waiting jobs of a queue in the order workers will take them (next first)."""
    position = 0
    needle = f'"id": "{site}::'.encode() if site else b""  # other sites' messages are skipped undecoded
    for key in keys.queue_lists(queue):
        length = r.llen(key)
        end = length - 1
        while end >= 0:
            start = max(0, end - chunk + 1)
            items = r.lrange(key, start, end)
            for raw in reversed(items):
                if needle and needle not in raw:
                    position += 1
                    continue
                info = decode_message(raw)
                if site and info["site"] != site:
                    position += 1
                    continue
                yield _queued(info, queue, raw, key, position)
                position += 1
            end = start - 1


def started_jobs(r: redis.Redis, keys: Keys, site: str | None = None) -> list[Job]:
    """Jobs a worker has taken and not finished (``unacked``, see delivery.py), oldest first.

    ``extra`` says whose lease it is: ``lease_expires`` (epoch s) and ``orphaned`` (True when the
    lease lapsed: its worker is gone and the job goes back to its queue at the next sweep)."""
    messages, metas, leases, (secs, usecs) = snapshot(
        r,
        lambda pipe: (
            pipe.hgetall(keys.unacked).hgetall(keys.inflight).zrange(keys.leases, 0, -1, withscores=True).time()
        ),
    )
    now = secs + usecs / 1e6
    expiry = {tag.decode(): score for tag, score in leases}
    jobs = []
    for tag, raw in messages.items():
        name = tag.decode()
        try:
            meta = decode_meta(metas[tag])
        except (KeyError, ValueError, TypeError):
            meta = {"queue": "default", "taken_at": None, "worker": None}
        try:
            info = decode_message(raw)
        except (ValueError, TypeError, AttributeError):
            info = _unreadable(name, raw)
        if site and info["site"] != site:
            continue
        lease = expiry.get(name)
        jobs.append(
            Job(
                id=info["id"],
                site=info["site"],
                queue=meta["queue"] or "default",
                method=info["method"],
                state=registry.STARTED,
                kwargs=info["kwargs"],
                event=info["event"],
                enqueued_at=info["enqueued_at"],
                started_at=meta["taken_at"],
                extra={
                    "delivery_tag": name,
                    "worker": meta["worker"],
                    "timeout": (info["headers"].get("timelimit") or [0])[0],
                    "lease_expires": lease,
                    "orphaned": lease is not None and lease < now,
                },
            )
        )
    return sorted(jobs, key=lambda j: j.started_at or 0)


def started_counts(r: redis.Redis, keys: Keys) -> dict[str, dict[str, int]]:
    """queue -> site -> number of running jobs."""
    out: dict[str, dict[str, int]] = {}
    for job in started_jobs(r, keys):
        per_site = out.setdefault(job.queue, {})
        per_site[job.site] = per_site.get(job.site, 0) + 1
    return out


def find_pending(r: redis.Redis, keys: Keys, queues: Iterable[str], job_id: str) -> Job | None:
    for queue in queues:
        lists = keys.queue_lists(queue)
        found = r.eval(_FIND, len(lists), *lists, f'"id": "{job_id}"')
        if found:
            return _queued(decode_message(found[1]), queue, found[1], lists[int(found[0]) - 1], None)
    return None


def _queued(info: dict[str, Any], queue: str, raw: bytes, key: str, position: int | None) -> Job:
    return Job(
        id=info["id"],
        site=info["site"],
        queue=queue,
        method=info["method"],
        state=registry.QUEUED,
        kwargs=info["kwargs"],
        event=info["event"],
        enqueued_at=info["enqueued_at"],
        position=position,
        raw=raw,
        list_key=key,
    )


def find_job(rt: Runtime, job_id: str) -> Job | None:
    """The job with this full id, with its state; a tracked job that finished recently is "finished"."""
    job = lookup(rt, job_id)
    if job is None and registry.get_status(rt.redis, rt.keys, job_id) == registry.FINISHED:
        return Job(id=job_id, site=registry.site_of(job_id), queue="", method="", state=registry.FINISHED)
    return job


def lookup(rt: Runtime, job_id: str) -> Job | None:
    """A job by full id: running, failed or waiting (in that order), or None."""
    r, keys, queues = rt.redis, rt.keys, list(rt.settings.queues)
    for job in started_jobs(r, keys):
        if job.id == job_id:
            return job
    rec = registry.find_failed(r, keys, queues, job_id)
    if rec is not None:
        return failed_info(rec)
    return find_pending(r, keys, queues, job_id)


def failed_info(rec: dict[str, Any]) -> Job:
    """A failed-registry record as a Job."""
    job_id = rec["job_id"]
    kwargs = rec.get("kwargs")
    return Job(
        id=job_id,
        site=rec.get("site") or registry.site_of(job_id),
        queue=rec.get("queue") or "default",
        method=rec.get("method") or "",
        state=registry.FAILED,
        kwargs=kwargs if isinstance(kwargs, dict) else {},
        event=rec.get("event"),
        enqueued_at=rec.get("enqueued_at"),
        started_at=rec.get("started_at"),
        extra={k: rec.get(k) for k in ("exception", "traceback", "worker", "failed_at", "user", "timeout", "raw")},
    )
