"""Reading jobs straight from Redis without disturbing workers: counts, listings, lookups.

Waiting messages are kombu's JSON envelopes in the queue lists (see keys.py); a job's site is the
part of its id before ``::`` and the id is the first ``"id": "`` in the envelope (Celery's header
order), so scripts can match a site without decoding JSON. Counts come from the per-site counters
our transport keeps (see transport.py), checked against the lists' lengths.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from benchcelery.broker.delivery import decode_meta
from benchcelery.errors import BenchError
from benchcelery.jobs import registry, safe
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


# KEYS: queue lists. ARGV[1]: '"id": "' + the JSON-escaped prefix (a quick filter), ARGV[2]: the
# escaped prefix, ARGV[3]: most ids to return. Returns the (escaped) ids of waiting messages whose
# id (the first "id" of the envelope: Celery's header) starts with the prefix.
_FIND_PREFIX = """
local out, seen = {}, {}
for k = 1, #KEYS do
  local len = redis.call('LLEN', KEYS[k])
  for start = 0, len - 1, 2000 do
    local items = redis.call('LRANGE', KEYS[k], start, start + 1999)
    for _, item in ipairs(items) do
      if string.find(item, ARGV[1], 1, true) then
        local id = string.match(item, '"id": "([^"]*)"')
        if id and string.sub(id, 1, #ARGV[2]) == ARGV[2] and not seen[id] then
          seen[id] = true
          table.insert(out, id)
          if #out >= tonumber(ARGV[3]) then return out end
        end
      end
    end
  end
end
return out
"""

MAX_MATCHES = 6  # a prefix matching more jobs is reported with this many of them


class AmbiguousJobIdError(BenchError):
    """A job id prefix that matches several jobs."""

    def __init__(self, prefix: str, matches: list[str]) -> None:
        shown = ", ".join(m[:200] for m in matches[: MAX_MATCHES - 1])
        more = ", ..." if len(matches) >= MAX_MATCHES else ""
        super().__init__(f"Job id {prefix[:200]} is ambiguous: it starts {shown}{more}; give more characters")
        self.matches = matches


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
    is not one (it waits to be recorded as failed by a worker) is one ``[unreadable]`` row, never raises."""
    return safe.describe_message(raw)


def _unreadable(tag: str, raw: bytes) -> dict[str, Any]:
    return safe.unreadable(raw, tag)


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
                if site and info["site"] != site and not info["method"].startswith(safe.UNREADABLE):
                    position += 1  # (an unreadable element naming the site is shown as one row)
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
    if job is None:
        job = _delayed(rt, job_id)
    if job is None and registry.get_status(rt.redis, rt.keys, job_id) == registry.FINISHED:
        return Job(id=job_id, site=registry.site_of(job_id), queue="", method="", state=registry.FINISHED)
    return job


def _delayed(rt: Runtime, job_id: str) -> Job | None:
    """The job waiting in the delayed set (run later, or its next attempt), or None."""
    from benchcelery.jobs.scheduled import find

    row = find(rt, job_id)
    if row is None:
        return None
    extra = {"due": row.due, "attempts": row.attempts}
    return Job(id=job_id, site=row.site, queue=row.queue, method=row.method, state=row.kind, extra=extra)


def find_typed(rt: Runtime, job_id: str) -> Job | None:
    """What an operator's job id names (commands and the dashboard): the job with exactly this full
    id (``find_job``), else the one job whose id starts with it (``resolve_prefix``: a unique prefix,
    as the dashboard's short ids; AmbiguousJobIdError when several match)."""
    job = find_job(rt, job_id)
    if job is None:
        full = resolve_prefix(rt, job_id)
        job = lookup(rt, full) if full else None
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


def resolve_prefix(rt: Runtime, prefix: str) -> str | None:
    """The full id of the one waiting, running or failed job whose id starts with ``prefix`` (a full
    id's start, ``<site>::<first characters>``), or None when no job's does. A job whose id is exactly
    ``prefix`` wins; several others raise AmbiguousJobIdError naming them. Finished jobs are found
    by their exact id only."""
    r, keys, queues = rt.redis, rt.keys, list(rt.settings.queues)
    found = {job.id for job in started_jobs(r, keys) if job.id.startswith(prefix)}
    found |= {job_id for _, _, job_id in registry.failed_entries(r, keys, queues) if job_id.startswith(prefix)}
    escaped = json.dumps(prefix)[1:-1]
    for queue in queues:
        if len(found) >= MAX_MATCHES:
            break
        lists = keys.queue_lists(queue)
        ids = r.eval(_FIND_PREFIX, len(lists), *lists, f'"id": "{escaped}', escaped, MAX_MATCHES)
        found |= {json.loads(b'"' + raw + b'"') for raw in ids}
    if prefix in found:
        return prefix
    if len(found) > 1:
        raise AmbiguousJobIdError(prefix, sorted(found))
    return found.pop() if found else None


def failed_info(rec: dict[str, Any]) -> Job:
    """A failed-registry record as a Job (fields of the wrong type left out; never raises)."""
    return safe.failed_info(rec)
