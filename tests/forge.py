"""Forged queue elements, pushed raw as someone holding the bench's Redis credentials could
(test_security.py, test_fuzz.py, benchmarks/fuzz.py)."""

from __future__ import annotations

import base64
import json
from typing import Any

import redis


def valid_message(rt: Any, method: str = "testapp.tasks.record", queue: str = "default", **kwargs: Any) -> dict:
    """The envelope ``enqueue`` would push for ``method(**kwargs)`` on site1.local."""
    from benchcelery.jobs.bulk import envelope
    from benchcelery.jobs.enqueue import _prepare

    prepared = _prepare(rt, "site1.local", method, queue=queue, kwargs=kwargs)
    return json.loads(envelope(prepared.options, "benchcelery.execute_job", "forger", "reply"))


def set_body(message: dict, body: Any) -> dict:
    """``message`` with ``body`` (any JSON value, or raw text) as its base64 body."""
    text = body if isinstance(body, str) else json.dumps(body)
    message["body"] = base64.b64encode(text.encode()).decode()
    return message


def push(r: redis.Redis, keys: Any, queue: str, element: bytes | str) -> None:
    """LPUSH an element on kombu's normal-priority list of the queue, as another tool holding the
    credentials would, with the counter and wake token our own push adds (the site the fetch script
    will subtract it from: the headers' site, else '?'). Workers move it to its site's list
    (adopt.lua) before they take it, as they do with any message pushed there."""
    site = "?"
    try:
        named = json.loads(element)["headers"]["site"]
        site = named if isinstance(named, str) else "?"
    except Exception:
        pass
    with r.pipeline() as pipe:
        pipe.lpush(keys.queue_list(queue, 3), element)
        pipe.hincrby(keys.pending_counts(queue), site, 1)
        pipe.lpush(keys.wake(queue), "")
        pipe.execute()


def nested(levels: int) -> str:
    """JSON nested ``levels`` deep (built as text: json.dumps would recurse)."""
    return "[" * levels + "]" * levels
