"""Reading jobs straight from Redis without disturbing workers: counts, listings, lookups.

Waiting messages are kombu's JSON envelopes in each site's lists of a queue (``q:<queue>:<site>``,
see keys.py), and, until a worker moves them, in kombu's per-queue lists (another tool's pushes, a
bench upgraded from the one-list layout). A job's site is the part of its id before ``::`` and the
id is the first ``"id": "`` in the envelope (Celery's header order), so scripts can match a site
without decoding JSON. Counts are the sites' lists' lengths (the per-site counters our transport
keeps name the sites, and are repaired when they disagree).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from benchcelery.bench.keys import PRIORITY_STEPS
from benchcelery.broker.delivery import decode_meta
from benchcelery.errors import BenchError
from benchcelery.jobs import registry, safe
from benchcelery.jobs.model import Job

if TYPE_CHECKING:
    import redis

    from benchcelery.bench.keys import Keys
    from benchcelery.runtime import Runtime


# Exact count of lists by site: KEYS = the lists. Returns it flat (site, n, site, n, ...).
_RECOUNT = """
local counts = {}
for k = 1, #KEYS do
  local len = redis.call('LLEN', KEYS[k])
  for start = 0, len - 1, 2000 do
    local items = redis.call('LRANGE', KEYS[k], start, start + 1999)
    for _, item in ipairs(items) do
      local site = string.match(item, '"id": "([^":]*)::') or '?'
      counts[site] = (counts[site] or 0) + 1
    end
  end
end
local out = {}
for site, n in pairs(counts) do
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


def site_names(r: redis.Redis, keys: Keys, queue: str) -> list[str]:
    """The sites that may have jobs waiting in ``queue``: those taking turns and those counted."""
    pipe = r.pipeline(transaction=False)
    pipe.zrange(keys.sites(queue), 0, -1).hkeys(keys.pending_counts(queue))
    ring, counted = pipe.execute()
    return sorted({_text(s) for s in ring} | {_text(s) for s in counted})


def waiting_lists(r: redis.Redis, keys: Keys, queue: str, site: str | None = None) -> list[str]:
    """Every list that may hold waiting messages of ``queue`` (of ``site`` only, when given; kombu's
    per-queue lists are included either way: messages not yet moved to their site's lists)."""
    sites = [site] if site is not None else site_names(r, keys, queue)
    return [*keys.queue_lists(queue), *(key for s in sites for key in keys.site_lists(queue, s))]


def count_pending(
    r: redis.Redis, keys: Keys, queues: Iterable[str], site: str | None = None
) -> dict[str, dict[str, int]]:
    """queue -> site -> number of waiting jobs (all priority buckets).

    The length of each site's lists (one pipelined LLEN per list); the per-site counters the
    transport keeps are repaired where they disagree. Messages still in kombu's per-queue lists
    (not yet moved by a worker) are tallied by site with an exact re-count of those lists.
    ``site`` is accepted for symmetry; every site's count costs the same.
    """
    queues = list(queues)

    def heads(pipe: Any) -> None:
        for q in queues:
            pipe.zrange(keys.sites(q), 0, -1).hgetall(keys.pending_counts(q))
            for key in keys.queue_lists(q):
                pipe.llen(key)

    head = snapshot(r, heads)
    width = 2 + len(PRIORITY_STEPS)
    plan: list[tuple[str, list[str], dict[str, int], int]] = []
    for i, q in enumerate(queues):
        ring, raw, *kombu_lengths = head[i * width : (i + 1) * width]
        counters = {_text(k): int(v) for k, v in raw.items()}
        plan.append((q, sorted({_text(x) for x in ring} | set(counters)), counters, sum(kombu_lengths)))

    def site_lengths(pipe: Any) -> None:
        for name, names, _, _ in plan:
            for s in names:
                for key in keys.site_lists(name, s):
                    pipe.llen(key)

    lengths = iter(snapshot(r, site_lengths))
    out: dict[str, dict[str, int]] = {}
    for q, sites, counters, legacy in plan:
        counts = {s: sum(next(lengths) for _ in PRIORITY_STEPS) for s in sites}
        extra = _recount(r, keys, q) if legacy else {}
        for s, n in extra.items():
            counts[s] = counts.get(s, 0) + n
        wrong = {s: n for s, n in counts.items() if counters.get(s, 0) != n}
        if wrong:
            _repair(r, keys.pending_counts(q), wrong)
        out[q] = {s: n for s, n in counts.items() if n}
    return out


def _repair(r: redis.Redis, key: str, wrong: dict[str, int]) -> None:
    """Set the counters that disagree with the lists (a site with none waiting loses its field).
    Out of memory (maxmemory, noeviction) Redis refuses the writes: the counts shown are right all
    the same, and the next look repairs them."""
    import redis

    pipe = r.pipeline(transaction=False)
    for s, n in wrong.items():
        if n:
            pipe.hset(key, s, n)
        else:
            pipe.hdel(key, s)
    try:
        pipe.execute()
    except redis.ResponseError as exc:
        if "maxmemory" not in str(exc):
            raise


def _recount(r: redis.Redis, keys: Keys, queue: str) -> dict[str, int]:
    """site -> messages waiting in kombu's per-queue lists of ``queue``."""
    flat = r.register_script(_RECOUNT)(keys=keys.queue_lists(queue))
    return {_text(n): int(c) for n, c in zip(flat[::2], flat[1::2], strict=True)}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def decode_message(raw: bytes) -> dict[str, Any]:
    """A kombu envelope -> {id, site, method, kwargs, event, enqueued_at, headers}; an element that
    is not one (it waits to be recorded as failed by a worker) is one ``[unreadable]`` row, never raises."""
    return safe.describe_message(raw)


def _unreadable(tag: str, raw: bytes) -> dict[str, Any]:
    return safe.unreadable(raw, tag)


def iter_pending(r: redis.Redis, keys: Keys, queue: str, site: str | None = None, chunk: int = 1000) -> Iterator[Job]:
    """Waiting jobs of a queue: those not yet moved to their site's lists first, then each site's
    in the order workers take them (next first). ``position`` counts from the first of those lists:
    with ``site``, the job's place among the site's waiting jobs."""
    position = 0
    needle = f'"id": "{site}::'.encode() if site else b""  # other sites' messages are skipped undecoded
    for key in waiting_lists(r, keys, queue, site):
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
    site = job_id.split("::", 1)[0] if "::" in job_id else None
    for queue in queues:
        lists = waiting_lists(r, keys, queue, site)
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
    site = prefix.split("::", 1)[0] if "::" in prefix else None
    for queue in queues:
        if len(found) >= MAX_MATCHES:
            break
        lists = waiting_lists(r, keys, queue, site)
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
