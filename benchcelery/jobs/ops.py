"""Operations on jobs: purge, retry, delete, cancel. Site-scoped, safe while workers run.

Waiting jobs are removed by a Lua script per queue list that marks the matching elements and
removes the marks in one atomic step, so a job a worker took a moment ago is simply not purged,
and another site's jobs are never touched. Running jobs are never purged (cancel revokes them).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from benchcelery.errors import BenchError, JobNotFoundError, ValidationError
from benchcelery.jobs import inspect, registry
from benchcelery.jobs.model import Job

if TYPE_CHECKING:
    from benchcelery.runtime import Runtime

# KEYS[1]: a queue list, KEYS[2]: its queue's pending-count hash (see transport.py).
# ARGV[1]: tombstone; ARGV[2]: event needle ('' = any job);
# ARGV[3..]: site needles (none = every site). Returns the ids of the removed jobs.
_PURGE = """
local len = redis.call('LLEN', KEYS[1])
local tomb = ARGV[1]
local event = ARGV[2]
local ids = {}
for start = 0, len - 1, 2000 do
  local items = redis.call('LRANGE', KEYS[1], start, start + 1999)
  for i, item in ipairs(items) do
    local match = (event == '') or string.find(item, event, 1, true)
    if match and #ARGV > 2 then
      match = false
      for s = 3, #ARGV do
        if string.find(item, ARGV[s], 1, true) then match = true; break end
      end
    end
    if match then
      redis.call('LSET', KEYS[1], start + i - 1, tomb)
      table.insert(ids, string.match(item, '"id": "([^"]*)"') or '')
      redis.call('HINCRBY', KEYS[2], string.match(item, '"id": "([^":]*)::') or '?', -1)
    end
  end
end
if #ids > 0 then redis.call('LREM', KEYS[1], 0, tomb) end
return ids
"""

# Remove one exact message (0 when a worker took it first) and count it out. KEYS: list, counts.
_REMOVE_ONE = """
local n = redis.call('LREM', KEYS[1], 1, ARGV[1])
if n > 0 then redis.call('HINCRBY', KEYS[2], ARGV[2], -1) end
return n
"""


ALL_EVENTS = "all"  # purge_jobs(event="all"): every job enqueued with an event tag


def event_needle(event: str) -> str:
    """The text that marks a waiting message enqueued with event tag ``event`` (the header as the
    message's JSON holds it); ``all`` matches every tagged message. ValidationError for an empty tag."""
    if not isinstance(event, str) or not event.strip():
        raise ValidationError("must be a non-empty event tag (a scheduler event such as daily, or an enqueue tag)")
    return '"event": "' if event == ALL_EVENTS else f'"event": {json.dumps(event)}'


@dataclass
class PurgeResult:
    pending: int
    failed: int

    @property
    def total(self) -> int:
        return self.pending + self.failed


def purge_jobs(
    rt: Runtime, sites: list[str] | None, queues: Iterable[str] | None = None, event: str | None = None
) -> PurgeResult:
    """Delete the waiting jobs (and, without ``event``, the failed records) of ``sites`` (None = all).

    ``event``: only the waiting jobs enqueued with that event tag (``enqueue(event=...)``,
    ``bench enqueue --event``; scheduled jobs carry their event type: ``daily``, ``cron``...);
    ``all`` = every job that has an event tag. Failed records are kept then.
    """
    r, keys = rt.redis, rt.keys
    queue_list = list(queues) if queues else list(rt.settings.queues)
    for q in queue_list:
        rt.settings.validate_queue(q)
    needle = "" if event is None else event_needle(event)
    site_needles = [f'"id": "{s}::' for s in sites] if sites is not None else []
    script = r.register_script(_PURGE)
    removed: list[str] = []
    for q in queue_list:
        # one site's lists when only some sites are purged; every list of the queue otherwise
        lists = (
            [k for s in sites for k in inspect.waiting_lists(r, keys, q, s)]
            if sites is not None
            else inspect.waiting_lists(r, keys, q)
        )
        for key in dict.fromkeys(lists):
            if r.llen(key):
                tomb = f"purged:{secrets.token_hex(8)}"
                found = script(keys=[key, keys.pending_counts(q)], args=[tomb, needle, *site_needles])
                removed += [i.decode() for i in found]
    failed = 0
    if event is None:
        for q in queue_list:
            ids = registry.failed_ids(r, keys, q)
            if sites is not None:
                wanted = tuple(f"{s}::" for s in sites)
                ids = [i for i in ids if i.startswith(wanted)]
            failed += registry.remove_failed(r, keys, q, ids)
    _forget_status(rt, removed)
    return PurgeResult(pending=len(removed), failed=failed)


def _forget_status(rt: Runtime, job_ids: list[str]) -> None:
    status_keys = [rt.keys.job_status(i) for i in job_ids if i]
    for start in range(0, len(status_keys), 1000):
        rt.redis.delete(*status_keys[start : start + 1000])


def full_id(job_id: str, site: str) -> str:
    return job_id if "::" in job_id else f"{site}::{job_id}"


def scope_job_id(job_id: str, sites: list[str]) -> tuple[str, str]:
    """(site, full id) of ``job_id`` within the selected ``sites``: a bare id belongs to the first
    site; a full ``<site>::<id>`` of a site that is not selected is refused (ValidationError)."""
    if not sites:
        raise ValidationError("No site selected")
    if "::" not in job_id:
        return sites[0], f"{sites[0]}::{job_id}"
    site = job_id.split("::", 1)[0]
    if site not in sites:
        shown = ", ".join(sites[:5]) + (", ..." if len(sites) > 5 else "")
        raise ValidationError(
            f"Job {job_id[:200]} belongs to site {site[:200]}, not to the selected site(s) {shown}; "
            "use --site to select it"
        )
    return site, job_id


def resolve_id(rt: Runtime, site: str, job_id: str) -> str:
    """The full id ``job_id`` names (``find``'s rule: exact, else a unique start), so a command can
    say which job it acted on; raises JobNotFoundError or AmbiguousJobIdError."""
    return find(rt, job_id, site).id


def find(rt: Runtime, job_id: str, site: str) -> Job:
    """The waiting, running or failed job ``job_id`` names: its exact id, or a unique start of one
    (AmbiguousJobIdError lists the matches); JobNotFoundError when none."""
    info = inspect.lookup(rt, full_id(job_id, site))
    if info is None:
        full = inspect.resolve_prefix(rt, full_id(job_id, site))
        info = inspect.lookup(rt, full) if full else None
    if info is None:
        raise JobNotFoundError(full_id(job_id, site))
    return info


def retry_failed(rt: Runtime, site: str, job_id: str) -> str:
    """Re-enqueue a failed job with its original method, arguments, queue and event; the failed
    record is removed once the new message is queued. ``job_id`` may be a unique start of the id.
    Returns the job id."""
    rec = registry.find_failed(rt.redis, rt.keys, rt.settings.queues, full_id(job_id, site))
    if rec is None:
        full = inspect.resolve_prefix(rt, full_id(job_id, site))
        rec = registry.find_failed(rt.redis, rt.keys, rt.settings.queues, full) if full else None
    if rec is None:
        raise JobNotFoundError(full_id(job_id, site))
    return _requeue(rt, rec)


def retry_all(rt: Runtime, sites: list[str], queues: Iterable[str] | None = None) -> list[str]:
    done = []
    for q in list(queues) if queues else list(rt.settings.queues):
        rt.settings.validate_queue(q)
        for site in sites:
            ids = registry.failed_ids(rt.redis, rt.keys, q, site=site)
            for rec in registry.failed_records(rt.redis, rt.keys, q, ids):
                done.append(_requeue(rt, rec))
    return done


def _requeue(rt: Runtime, rec: dict[str, Any]) -> str:
    from benchcelery.context import local
    from benchcelery.jobs.enqueue import enqueue

    job_id = rec["job_id"]
    site, _, short = job_id.partition("::")
    if rec.get("raw") is not None and not rec.get("method"):
        raise BenchError(f"Cannot retry {job_id}: it was not a valid message (bench jobs show {job_id} has its text)")
    if not rt.bench.site_exists(site):
        raise BenchError(f"Cannot retry {job_id}: site {site} does not exist")
    if not isinstance(rec.get("kwargs"), dict) or not rec.get("method"):
        raise BenchError(f"Cannot retry {job_id}: it has no method and arguments to run again")
    saved = (local.site, local.user)
    local.site, local.user = site, rec.get("user") or "Administrator"
    try:
        timeout = rec.get("timeout")
        enqueue(
            rec["method"],
            queue=rec.get("queue") or "default",
            timeout=int(timeout) if timeout else None,
            event=rec.get("event"),
            job_name=rec.get("job_name"),
            job_id=short,
            **rec["kwargs"],
        )
    finally:
        local.site, local.user = saved
    registry.remove_failed_record(rt.redis, rt.keys, rec.get("queue") or "default", rec)
    return job_id


def delete_job(rt: Runtime, site: str, job_id: str) -> str:
    """Delete a waiting job or a failed record; a running job is refused (use cancel)."""
    info = find(rt, job_id, site)
    if info.state == registry.STARTED:
        raise BenchError(f"Job {info.id} is running; stop it with: bench jobs cancel {info.id} --terminate")
    if info.state == registry.FAILED:
        registry.remove_failed(rt.redis, rt.keys, info.queue, [info.id])
        return "failed"
    if not _remove_waiting(rt, info):
        raise BenchError(f"Job {info.id} was taken by a worker a moment ago; see bench jobs show {info.id}")
    return "queued"


def _remove_waiting(rt: Runtime, info: Job) -> bool:
    assert info.raw is not None and info.list_key is not None
    removed = int(rt.redis.eval(_REMOVE_ONE, 2, info.list_key, rt.keys.pending_counts(info.queue), info.raw, info.site))
    if removed:
        _forget_status(rt, [info.id])
    return removed > 0


def _refuse_in_process(rt: Runtime, info: Job) -> None:
    """A job running in its worker's own process (``bench worker --pool solo``) cannot be killed
    without killing the worker: refused, rather than reported terminated while it runs on."""
    worker = info.extra.get("worker")
    if info.state != registry.STARTED or not worker:
        return
    pool = rt.redis.hget(rt.keys.worker(worker), "pool")
    if pool in (b"solo", "solo"):
        raise BenchError(
            f"Job {info.id} runs inside worker {worker}'s own process (bench worker --pool solo) and cannot be "
            "terminated on its own: it stops at its timeout. To stop it now, stop that worker (TERM waits for "
            "the job; KILL stops it, and the job goes back to its queue to run again)"
        )


def cancel_job(
    rt: Runtime, site: str, job_id: str, terminate: bool = False, origin: str = "bench jobs cancel --terminate"
) -> str:
    """A waiting job is removed; a running one is revoked (and killed with ``terminate``; its
    failure record names ``origin``).

    Returns what happened: "removed", "revoked" or "terminated".
    """
    info = find(rt, job_id, site)
    if info.state == registry.FAILED:
        raise BenchError(f"Job {info.id} is not queued or running (it failed); use bench jobs delete")
    if info.state == registry.QUEUED and _remove_waiting(rt, info):
        return "removed"
    info = find(rt, job_id, site)  # taken meanwhile: it is running now
    if terminate:  # read by the worker that records the job as terminated (request.py)
        _refuse_in_process(rt, info)
        rt.redis.set(rt.keys.terminated_by(info.id), origin, ex=3600)
    rt.app.control.revoke(info.id, terminate=terminate, signal="SIGTERM")
    # The worker records a terminated job as failed (JobTerminated) in its own process.
    return "terminated" if terminate else "revoked"
