"""The job Frappe code gets back from ``frappe.enqueue`` (and in ``on_success`` / ``on_failure``):
a Job with the parts of ``rq.Job`` Frappe code uses, each reading Redis when called, as rq does.

Times are epoch seconds (rq gives datetimes). ``is_queued``/``is_started``/``is_finished``/
``is_failed`` are properties, as in rq.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from benchcelery.jobs import results
from benchcelery.jobs.inspect import find_job, iter_pending
from benchcelery.jobs.model import Job
from benchcelery.jobs.ops import cancel_job
from benchcelery.runtime import get_runtime


@dataclass
class RQJob(Job):
    _meta: dict[str, Any] | None = field(default=None, repr=False)

    @classmethod
    def of(cls, job: Job) -> RQJob:
        return job if isinstance(job, RQJob) else cls(**{f.name: getattr(job, f.name) for f in fields(Job)})

    def as_dict(self) -> dict[str, Any]:
        data = super().as_dict()
        data.pop("_meta", None)
        return data

    def refresh(self) -> bool:
        """Re-read the job's state, position, times and failure from Redis. A job no longer found
        is "finished" while its result is kept (``rq_results_ttl``); else its state stays and this
        returns False."""
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
            self._meta = results.load_meta(get_runtime(), self.id)
        return self._meta

    def save_meta(self) -> None:
        results.save_meta(get_runtime(), self.id, self.meta)

    def cancel(self) -> str:
        """Remove it from its queue, or revoke it when a worker runs it (``bench jobs cancel``)."""
        return cancel_job(get_runtime(), self.site, self.id)

    def return_value(self, refresh: bool = True) -> Any:
        """What the method returned (kept ``rq_results_ttl`` seconds), or None."""
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
        record = results.load_result(get_runtime(), self.id)
        return float(record["ended_at"]) if record and record.get("ended_at") else None
