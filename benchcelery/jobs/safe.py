"""Reading queue elements and failure records that anyone holding the bench's Redis credentials
could have written: every read command and dashboard page gets a description it can show, and an
element that is not a valid message (one a worker will record as failed, see broker/envelope.py)
is described as one ``[unreadable]`` row instead of raising.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from benchcelery.bench.keys import UNKNOWN_SITE
from benchcelery.broker import envelope
from benchcelery.jobs import registry
from benchcelery.jobs.model import Job

UNREADABLE = "[unreadable]"
_DEEPEST = envelope.MAX_DEPTH
_SNIPPET = 60  # characters of an unreadable element shown in its row


def describe_message(raw: bytes | str, tag: str = "") -> dict[str, Any]:
    """A kombu envelope -> {id, site, method, kwargs, event, enqueued_at, headers, priority}; an
    element a worker would refuse is described as ``[unreadable]``. Never raises."""
    try:
        message = json.loads(raw)
        envelope.check(message)
        return _info(message)
    except Exception as exc:  # RecursionError, OverflowError, ... included: any element is readable as a row
        return unreadable(raw, tag, exc)


def _info(message: dict[str, Any]) -> dict[str, Any]:
    """What a checked envelope (envelope.check passed) says about its job."""
    headers: dict[str, Any] = message["headers"]
    properties: dict[str, Any] = message["properties"]
    body = message.get("body", "")
    text = base64.b64decode(body) if properties.get("body_encoding") == "base64" else body
    kwargs = json.loads(text)[1]
    job_id = headers["id"]
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


def unreadable(raw: bytes | str, tag: str = "", exc: BaseException | None = None) -> dict[str, Any]:
    """The description of an element that is not a valid message: one ``[unreadable]`` row."""
    head = raw[: _SNIPPET * 4]
    text = head.decode("utf-8", "replace") if isinstance(head, bytes) else str(head)
    reason = f"{type(exc).__name__}: {str(exc)[:120]}; " if exc is not None else ""
    return {
        "id": f"{UNKNOWN_SITE}::{tag or 'malformed'}",
        "site": UNKNOWN_SITE,
        "method": f"{UNREADABLE} ({reason}not a valid message: {text[:_SNIPPET]!r})",
        "kwargs": {},
        "event": None,
        "enqueued_at": None,
        "headers": {},
        "priority": None,
    }


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _time(value: Any) -> float | None:
    return float(value) if envelope.is_timestamp(value) else None


def failed_info(rec: Any) -> Job:
    """A failed-registry record as a Job; fields of the wrong type are left out, and a record that
    is not one at all is an ``[unreadable]`` row. Never raises."""
    if not isinstance(rec, dict) or not isinstance(rec.get("job_id"), str):
        bad = f"{UNKNOWN_SITE}::malformed"
        return Job(id=bad, site=UNKNOWN_SITE, queue="default", method=UNREADABLE, state=registry.FAILED)
    job_id: str = rec["job_id"]
    kwargs = rec.get("kwargs")
    extra = {k: rec.get(k) for k in ("exception", "traceback", "worker", "user", "raw", "kwargs_cut")}
    extra = {k: (v if isinstance(v, str) or v is None else str(v)[:200]) for k, v in extra.items()}
    timeout = rec.get("timeout")
    return Job(
        id=job_id,
        site=_text(rec.get("site")) or registry.site_of(job_id),
        queue=_text(rec.get("queue")) or "default",
        method=_text(rec.get("method")) or "",
        state=registry.FAILED,
        kwargs=kwargs if isinstance(kwargs, dict) and envelope.depth(kwargs, _DEEPEST) <= _DEEPEST else {},
        event=_text(rec.get("event")),
        enqueued_at=_time(rec.get("enqueued_at")),
        started_at=_time(rec.get("started_at")),
        extra={
            **extra,
            "failed_at": _time(rec.get("failed_at")),
            "timeout": timeout if envelope.is_timestamp(timeout) else None,
        },
    )
