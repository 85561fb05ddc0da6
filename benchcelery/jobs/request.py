"""The worker-side request of a job, in the worker's main process (not the pool process).

``JobRequest`` records the failures that happen outside the job's own process (hard timeout, dead
pool process, ``bench jobs cancel --terminate``) and counts a job that succeeded in the duration
histogram and the history, summed with the other jobs of the last second (tally.py) and written
with a later ack. ``running_tags`` and ``shutting_down`` answer the
transport's questions about this worker (broker/hooks.py).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from billiard.exceptions import WorkerLostError
from celery.exceptions import TimeLimitExceeded
from celery.worker import state
from celery.worker.request import Request

from benchcelery.jobs import history, tally
from benchcelery.jobs.failures import record
from benchcelery.jobs.retry import attempts_of
from benchcelery.jobs.retrying import RetryScheduled, schedule_retry
from benchcelery.runtime import get_runtime

logger = logging.getLogger("benchcelery.job")


def job_meta(request: Any) -> dict[str, Any]:
    """What a message's headers say about the job (site, method, event, ...)."""

    def h(name: str, default: Any = None) -> Any:
        value = getattr(request, name, None)
        if value is None and isinstance(getattr(request, "headers", None), dict):
            value = request.headers.get(name)
        return default if value is None else value

    delivery = getattr(request, "delivery_info", None) or {}
    return {
        "job_id": request.id,
        "site": h("site"),
        "method": h("method") or getattr(request, "shadow", None) or "",
        "event": h("event"),
        "user": h("user"),
        "job_name": h("job_name"),
        "queue": delivery.get("routing_key") or "default",
        "enqueued_at": h("enqueued_at"),
        "tracked": bool(h("tracked", False)),
        "on_success": h("on_success"),
        "on_failure": h("on_failure"),
        "timeout": (h("timelimit") or [None, None])[1],
        "redelivered": int(delivery.get("redelivered") or 0),  # times its lease lapsed (transport.py)
        "retry": h("retry"),  # the job's retry policy (jobs/retry.py)
        "attempts": attempts_of(h("attempts")),  # its earlier failed attempts
    }


def running_tags() -> set[str]:
    """Delivery tags of the jobs this worker process is running now."""
    return {r.message.delivery_tag for r in list(state.active_requests) if getattr(r, "message", None) is not None}


def shutting_down() -> bool:
    """Whether this worker is stopping (warm or cold shutdown)."""
    return state.should_stop is not None or state.should_terminate is not None


def _terminated_by(job_id: str) -> str:
    """Who asked to terminate ``job_id`` (``jobs cancel`` wrote it), for its failure record."""
    try:
        rt = get_runtime()
        origin = rt.redis.getdel(rt.keys.terminated_by(job_id))
    except Exception:  # the record is written whatever Redis says
        origin = None
    return origin.decode(errors="replace") if isinstance(origin, bytes) else origin or "terminated"


class JobRequest(Request):
    """Records failures that happen outside the job's own process (hard timeout, dead pool
    process, `jobs cancel --terminate`), in the worker's main process."""

    def __init__(self, message: Any, *args: Any, body: Any = None, decoded: bool = False, **kwargs: Any) -> None:
        # The body the transport decoded and checked (broker/intake.py, JobMessage), as it is:
        # Celery's own request keeps the raw body, and the trace decodes it once more per job.
        payload = getattr(message, "_decoded_cache", None)
        if not decoded and payload is not None:
            body, decoded = payload, True
        super().__init__(message, *args, body=body, decoded=decoded, **kwargs)

    def revoked(self) -> bool:
        """Celery asks this right before it hands the job to the pool: also refuse a job whose
        lease is no longer this worker's (held ahead by a worker that was stalled or cut off from
        Redis meanwhile; transport.Channel.may_start). It is neither acknowledged nor recorded:
        its new holder runs it, once."""
        if super().revoked():
            return True
        message: Any = getattr(self, "message", None)
        may_start = getattr(getattr(message, "channel", None), "may_start", None)
        if may_start is None or may_start(message.delivery_tag):
            return False
        self._already_revoked = True
        self.acknowledged = True  # nothing to acknowledge: not ours any more
        message._state = "REQUEUED"
        message.channel.qos.forget(message.delivery_tag)
        state.task_ready(self)
        return True

    def terminate(self, pool: Any, signal: Any = None) -> None:
        super().terminate(pool, signal)
        self._record(SystemExit(_terminated_by(self.id)), None)

    def send_event(self, type: str, **fields: Any) -> None:
        # Celery's per-worker request class replaces on_success; the success event (sent whether
        # events are enabled or not) is where a success and its run time show. A failure was
        # counted where it was recorded (record).
        if type == "task-succeeded":
            self._observe(fields.get("runtime") or 0.0)
        super().send_event(type, **fields)

    def _observe(self, runtime: float) -> None:
        """Count the job in the duration histogram (bench metrics) and the history (dashboard
        charts): summed in this process's tally (tally.py), written at most once a second, then
        queued on the transport channel, which sends it with the next ack
        (transport.Channel.note), else written now."""
        now = time.time()
        request = self._request_dict
        try:
            rt = get_runtime()
            tally.count(
                rt.keys,
                (self.delivery_info or {}).get("routing_key"),
                request.get("method") or self.task_name,
                request.get("site"),
                request.get("enqueued_at"),
                now,
                runtime or 0.0,
                lambda summed: self._note(rt, summed),
            )
            if history.due(now):
                history.roll_pending(rt.redis, rt.keys, now)
        except Exception:  # metrics must never fail a job
            logger.warning("Could not count the duration of job %s", self.id, exc_info=True)

    def _note(self, rt: Any, commands: list[tuple[Any, ...]]) -> None:
        """Send ``commands`` with the job's ack (the channel's next poll), else now."""
        note = getattr(getattr(self.message, "channel", None), "note", None)
        if note is None:
            pipe = rt.redis.pipeline(transaction=False)
            for command in commands:
                pipe.execute_command(*command)
            pipe.execute(raise_on_error=False)
        else:
            note(commands)

    def _count_retry(self) -> None:
        """Count a job run again after its pool process died (history)."""
        try:
            rt = get_runtime()
            queue = (self.delivery_info or {}).get("routing_key") or "default"
            commands = history.simple(rt.keys, history.RETRIED, str(self._request_dict.get("site") or "?"), queue)
            if commands:
                self._note(rt, commands)
        except Exception:
            logger.warning("Could not count the retry of job %s", self.id, exc_info=True)

    def on_timeout(self, soft: bool, timeout: float) -> None:
        super().on_timeout(soft, timeout)
        if not soft and not state.should_terminate:
            self._record(TimeLimitExceeded(timeout), None)

    def on_failure(self, exc_info: Any, send_failed_event: bool = True, return_ok: bool = False) -> None:
        if state.should_terminate:
            # A cold shutdown stopped the job: it is not acknowledged, and goes back to its queue
            # (broker/qos.py, QoS.restore_unacked) — neither retried nor recorded as failed.
            return
        exc = exc_info.exception
        exc = getattr(exc, "exc", exc) if not isinstance(exc, RetryScheduled) else exc
        if isinstance(exc, RetryScheduled):
            schedule_retry(self, exc, lambda error: self._record(error, None))  # then Celery acks: that schedules it
        super().on_failure(exc_info, send_failed_event=send_failed_event, return_ok=return_ok)
        if isinstance(exc, WorkerLostError):
            if self._context.retries >= (self.task.max_retries or 0):
                self._record(exc, exc_info.traceback)
            else:
                self._count_retry()

    def _record(self, exc: BaseException, tb: str | None) -> None:
        meta = job_meta(self._context)
        meta["worker"] = self.hostname
        record(meta, self.kwargs, exc, tb)
