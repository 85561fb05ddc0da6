"""Celery's consumer, recording malformed and unknown messages in the failed-job registry."""

from __future__ import annotations

from typing import Any

from celery.worker.consumer import Consumer as CeleryConsumer

from benchcelery.jobs.execute import record


def _meta(message: Any, method: str | None = None) -> dict[str, Any]:
    headers = getattr(message, "headers", None) or {}
    delivery = getattr(message, "delivery_info", None) or {}
    job_id = str(headers.get("id") or f"?::{getattr(message, 'delivery_tag', 'unknown')}")
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

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        body = getattr(message, "body", b"")
        raw = body[:2000].decode("utf-8", "replace") if isinstance(body, bytes) else str(body)[:2000]
        record({**_meta(message), "worker": self.hostname}, {"raw": raw}, ValueError(f"Malformed message: {exc}"), None)
        super().on_decode_error(message, exc)

    def on_unknown_task(self, body: Any, message: Any, exc: Exception) -> None:
        record({**_meta(message), "worker": self.hostname}, {}, ValueError(f"Unknown task: {exc}"), None)
        super().on_unknown_task(body, message, exc)

    def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
        record({**_meta(message), "worker": self.hostname}, {}, ValueError(f"Invalid message: {exc}"), None)
        super().on_invalid_task(body, message, exc)
