"""Celery's consumer, recording malformed and unknown messages in the failed-job registry."""

from __future__ import annotations

from typing import Any

from celery.worker.consumer import Consumer as CeleryConsumer

from benchcelery.bench.keys import UNKNOWN_SITE
from benchcelery.broker import poll
from benchcelery.jobs.failures import RAW_CAP, record
from benchcelery.worker.lookahead import held_ahead


def _meta(message: Any, method: str | None = None) -> dict[str, Any]:
    headers = getattr(message, "headers", None) or {}
    delivery = getattr(message, "delivery_info", None) or {}
    job_id = str(headers.get("id") or getattr(message, "delivery_tag", "unknown"))
    if "::" not in job_id:
        job_id = f"{UNKNOWN_SITE}::{job_id}"
    return {
        "job_id": job_id,
        "site": headers.get("site") or job_id.split("::", 1)[0],
        "method": method or headers.get("method") or headers.get("task") or "",
        "queue": delivery.get("routing_key") or "default",
        "event": headers.get("event"),
        "user": headers.get("user"),
    }


class Consumer(CeleryConsumer):
    class Blueprint(CeleryConsumer.Blueprint):
        # Event heartbeats only while task events are on (worker/events.py).
        default_steps = [
            "benchcelery.worker.events:Heart" if step == "celery.worker.consumer.heart:Heart" else step
            for step in CeleryConsumer.Blueprint.default_steps
        ]

    def __init__(self, *args: Any, initial_prefetch_count: int = 1, **kwargs: Any) -> None:
        # One job per pool process (prefetch multiplier 1), plus those held ahead (worker/lookahead.py).
        # None with --pool solo: a job runs in the loop's own thread, so none could be fetched meanwhile.
        inline = getattr(kwargs.get("pool"), "runs_inline", False)
        self.ahead = 0 if inline else held_ahead(initial_prefetch_count)
        # Batches of short jobs where the next job waits for this one anyway (solo) or is held
        # ahead (one pool process); a pool's free process takes the next job at once.
        poll.take_batches(poll.BATCH if inline or self.ahead else 1)
        super().__init__(*args, initial_prefetch_count=initial_prefetch_count + self.ahead, **kwargs)

    @property
    def max_prefetch_count(self) -> int:
        return int(self.pool.num_processes * self.prefetch_multiplier) + self.ahead

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        body = getattr(message, "body", b"")
        raw = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
        meta = {**_meta(message), "worker": self.hostname}
        record(meta, {}, ValueError(f"Malformed message: {exc}"), None, raw=raw[:RAW_CAP])
        super().on_decode_error(message, exc)

    def on_unknown_task(self, body: Any, message: Any, exc: Exception) -> None:
        meta = {**_meta(message), "worker": self.hostname}
        record(meta, _arguments(body, message), ValueError(f"Unknown task: {exc}"), None, raw=_raw(message))
        super().on_unknown_task(body, message, exc)

    def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
        meta = {**_meta(message), "worker": self.hostname}
        record(meta, _arguments(body, message), ValueError(f"Invalid message: {exc}"), None, raw=_raw(message))
        super().on_invalid_task(body, message, exc)


def _arguments(body: Any, message: Any) -> dict[str, Any]:
    """The job's keyword arguments (and positional ones, if any) from a protocol-2 body, so a
    record of a message that could not run keeps what it asked for."""
    if body is None or isinstance(body, bytes | str):
        try:
            body = message.decode()
        except Exception:
            return {}
    if isinstance(body, list | tuple) and len(body) >= 2 and isinstance(body[1], dict):
        args = list(body[0]) if isinstance(body[0], list | tuple) else []
        return {**({"args": args} if args else {}), **body[1]}
    return {}


def _raw(message: Any) -> str:
    body = getattr(message, "body", b"")
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
    return text[:RAW_CAP]
