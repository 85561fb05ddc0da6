"""The one description of a job, wherever it was found (just enqueued, waiting, running, failed)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

# Frappe develop writes job ids as `<site>||<id>` (with `:` of the id turned into `|`); v15 and this
# bench as `<site>::<id>`.
DEVELOP_SEP = "||"


def job_id_candidates(job_id: str, site: str | None) -> list[str]:
    """The full ids ``job_id`` may name, most likely first: ``<site>::<job_id>`` (a ``job_id`` given
    at enqueue, which may itself contain ``::``), then ``job_id`` as a full id in either form. Without
    a current ``site``, only a full id names anything."""
    found: list[str] = [f"{site}::{job_id}"] if site else []
    for sep in ("::", DEVELOP_SEP):
        head, cut, rest = job_id.partition(sep)
        if cut and head and rest and (site is None or head == site):
            found.append(f"{head}::{rest}")
            if sep == DEVELOP_SEP and "|" in rest:
                found.append(f"{head}::{rest.replace('|', ':')}")
    return list(dict.fromkeys(found))


@dataclass
class Job:
    id: str  # <site>::<id>
    site: str
    queue: str
    method: str
    state: str  # queued / started / finished / failed
    kwargs: dict[str, Any] = field(default_factory=dict)
    event: str | None = None
    timeout: int | None = None
    enqueued_at: float | None = None
    started_at: float | None = None
    position: int | None = None  # 0 = the next job a worker takes from its queue
    extra: dict[str, Any] = field(default_factory=dict)  # failure details, delivery tag, ...
    raw: bytes | None = field(default=None, repr=False)  # the waiting message, exactly as stored
    list_key: str | None = field(default=None, repr=False)
    _meta: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def status(self) -> str:
        """Frappe's name for ``state``."""
        return self.state

    @property
    def short_id(self) -> str:
        """The id without its ``<site>::`` prefix (what enqueue's ``job_id`` was)."""
        return self.id.split("::", 1)[1] if "::" in self.id else self.id

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("raw")
        data.pop("list_key")
        data.pop("_meta")
        return data

    # --- what Frappe code uses of an ``rq.Job`` (Redis is read at each call, as rq does) ---

    def refresh(self) -> bool:
        """Re-read the job's state, position, times and failure from Redis. A job no longer found
        is "finished" while its result is kept (``rq_results_ttl``); else its state stays and this
        returns False."""
        from benchcelery.jobs import results
        from benchcelery.jobs.inspect import find_job
        from benchcelery.runtime import get_runtime

        rt = get_runtime()
        found = find_job(rt, self.id)
        if found is None and results.load_result(rt, self.id) is not None:
            found = Job(id=self.id, site=self.site, queue=self.queue, method=self.method, state="finished")
        if found is None:
            return False
        self.state, self.position = found.state, found.position
        self.started_at = found.started_at or self.started_at
        self.extra = {**self.extra, **found.extra}
        return True

    def get_status(self, refresh: bool = True) -> str | None:
        """queued / started / finished / failed; None when the job is no longer known."""
        if not refresh:
            return self.state
        return self.state if self.refresh() else None

    @property
    def is_queued(self) -> bool:
        return self.get_status() == "queued"

    @property
    def is_started(self) -> bool:
        return self.get_status() == "started"

    @property
    def is_finished(self) -> bool:
        return self.get_status() == "finished"

    @property
    def is_failed(self) -> bool:
        return self.get_status() == "failed"

    def get_position(self) -> int | None:
        """Its place in its queue (0 = taken next), or None when it is not waiting."""
        from benchcelery.jobs.inspect import iter_pending
        from benchcelery.runtime import get_runtime

        if not self.refresh() or self.state != "queued":
            return None
        rt = get_runtime()
        for waiting in iter_pending(rt.redis, rt.keys, self.queue, site=self.site):
            if waiting.id == self.id:
                self.position = waiting.position
                return self.position
        return None  # taken meanwhile

    @property
    def meta(self) -> dict[str, Any]:
        """The dict ``save_meta`` stores (read once, then this object's copy)."""
        if self._meta is None:
            from benchcelery.jobs import results
            from benchcelery.runtime import get_runtime

            self._meta = results.load_meta(get_runtime(), self.id)
        return self._meta

    def save_meta(self) -> None:
        from benchcelery.jobs import results
        from benchcelery.runtime import get_runtime

        results.save_meta(get_runtime(), self.id, self.meta)

    def cancel(self) -> str:
        """Remove it from its queue, or revoke it when a worker runs it (``bench jobs cancel``)."""
        from benchcelery.jobs.ops import cancel_job
        from benchcelery.runtime import get_runtime

        return cancel_job(get_runtime(), self.site, self.id)

    def return_value(self, refresh: bool = True) -> Any:
        """What the method returned (kept ``rq_results_ttl`` seconds), or None."""
        from benchcelery.jobs import results
        from benchcelery.runtime import get_runtime

        record = results.load_result(get_runtime(), self.id)
        return record.get("result") if record else None

    @property
    def result(self) -> Any:
        return self.return_value()

    @property
    def exc_info(self) -> str | None:
        """The traceback of a failed job, else None."""
        if self.state != "failed":
            self.refresh()
        return (self.extra.get("traceback") or self.extra.get("exception")) if self.state == "failed" else None

    @property
    def origin(self) -> str:
        """rq's name for the job's queue."""
        return self.queue

    @property
    def func_name(self) -> str:
        return self.method

    @property
    def ended_at(self) -> float | None:
        """When it finished (its result is kept) or failed, in epoch seconds; None otherwise."""
        if self.state == "failed" and self.extra.get("failed_at"):
            return float(self.extra["failed_at"])
        from benchcelery.jobs import results
        from benchcelery.runtime import get_runtime

        record = results.load_result(get_runtime(), self.id)
        return float(record["ended_at"]) if record and record.get("ended_at") else None
