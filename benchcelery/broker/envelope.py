"""What the transport reads in a kombu message envelope before anything else does.

A queue can hold elements that are not valid messages (pushed by hand or by another tool, forged
by someone holding the bench's Redis credentials, or damaged): ``check`` finds them, so the
transport records and removes them before kombu or Celery could fail on them. Every field kombu,
Celery or the job engine reads is checked by type (and range, where a value feeds a timer or a
clock), the body is decoded and checked too (a protocol-2 ``[args, kwargs, embed]`` triple, nested
at most MAX_DEPTH levels), and a message that embeds further messages (``chain``, ``callbacks``,
``errbacks``, ``chord``) is refused: a worker never publishes what a queue element carries.

This module imports neither kombu nor Celery (read commands use it with Celery unimportable).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Callable
from datetime import datetime
from typing import Any

from benchcelery.bench.keys import UNKNOWN_SITE

# What loading and checking an envelope raises for an element that is not a valid message.
INVALID = (ValueError, TypeError, KeyError, binascii.Error, RecursionError, OverflowError, AttributeError)

MAX_DEPTH = 64  # nesting levels of a job's arguments (JSON arrays and objects)
MAX_NAME = 1000  # characters of a job id, task, site or method name
MAX_TIMELIMIT = 10 * 365 * 86400.0  # seconds; a time limit feeds the pool's timers
EMBEDDED = ("callbacks", "errbacks", "chain", "chord")

_TEXT = (str, type(None))
# Headers Celery's worker or the job engine read: name -> (accepted types, longest text).
_HEADERS: dict[str, tuple[tuple[type, ...], int | None]] = {
    "task": ((str,), MAX_NAME),
    "id": ((str,), MAX_NAME),
    "lang": (_TEXT, None),
    "shadow": (_TEXT, MAX_NAME),
    "root_id": (_TEXT, None),
    "parent_id": (_TEXT, None),
    "group": (_TEXT, None),
    "argsrepr": (_TEXT, None),
    "kwargsrepr": (_TEXT, None),
    "origin": (_TEXT, None),
    "periodic_task_name": (_TEXT, None),
    "ignore_result": ((bool, type(None)), None),
    "site": (_TEXT, MAX_NAME),
    "method": (_TEXT, MAX_NAME),
    "event": (_TEXT, None),
    "user": (_TEXT, None),
    "job_name": (_TEXT, None),
    "on_success": (_TEXT, MAX_NAME),
    "on_failure": (_TEXT, MAX_NAME),
    "tracked": ((bool, type(None)), None),
    "stamps": ((dict, type(None)), None),
    "groups": ((list, type(None)), None),
}
_COUNTS = ("retries", "group_index", "replaced_task_nesting")  # whole numbers >= 0 (or null)
_PROPERTIES: dict[str, tuple[type, ...]] = {
    "correlation_id": _TEXT,
    "reply_to": _TEXT,
    "delivery_tag": _TEXT,
    "delivery_mode": (int, type(None)),
}


class Embedded(ValueError):
    """The message embeds further messages (chain, callbacks, errbacks, chord)."""


def site(message: Any) -> str:
    """The site a message's headers name, UNKNOWN_SITE when they name none."""
    try:
        value = message["headers"].get("site")
    except (KeyError, TypeError, AttributeError):
        return UNKNOWN_SITE
    return value if isinstance(value, str) and value else UNKNOWN_SITE


def check(message: Any, loads: Callable[[str], Any] = json.loads) -> Any:
    """Raise one of INVALID unless ``message`` is a Celery protocol-2 task message kombu, Celery and
    the job engine can take apart without failing. ``loads`` decodes the body (the worker's intake
    passes kombu's decoding, what Celery would use); returns the decoded body (``[args, kwargs,
    embed]``), which the worker then runs as it is (intake.JobMessage) instead of decoding it again."""
    if not isinstance(message, dict):
        raise ValueError(f"a message is a JSON object, not {type(message).__name__}")
    properties, headers, body = message["properties"], message.get("headers"), message.get("body", "")
    if not isinstance(properties, dict) or not isinstance(headers, dict):
        raise ValueError("'properties' and 'headers' must be objects")
    if not isinstance(body, str):
        raise ValueError("'body' must be a string")
    _check_properties(properties)
    if message.get("content-type", "application/json") != "application/json":
        raise ValueError("'content-type' must be application/json")
    if message.get("content-encoding", "utf-8") != "utf-8":
        raise ValueError("'content-encoding' must be utf-8")
    check_headers(headers)
    text = base64.b64decode(body, validate=True).decode() if properties.get("body_encoding") else body
    body = loads(text)
    check_body(body)
    return body


def _check_properties(properties: dict[str, Any]) -> None:
    for name, types in _PROPERTIES.items():
        if not isinstance(properties.get(name), types):
            raise ValueError(f"property {name!r} must be {_names(types)}")
    info = properties.get("delivery_info", {})
    if not isinstance(info, dict):
        raise ValueError("'delivery_info' must be an object")
    for name in ("exchange", "routing_key"):
        if not isinstance(info.get(name), _TEXT):
            raise ValueError(f"delivery_info {name!r} must be a string")
    priority = properties.get("priority")
    if priority is not None and (not _whole(priority) or not 0 <= priority <= 255):
        raise ValueError("property 'priority' must be a whole number from 0 to 255")
    if properties.get("body_encoding") not in (None, "base64"):
        raise ValueError("property 'body_encoding' must be base64")


def check_headers(headers: dict[str, Any]) -> None:
    """Raise ValueError unless every header Celery or the job engine reads has its type."""
    for name, (types, longest) in _HEADERS.items():
        value = headers.get(name)
        if name in ("task", "id") and name not in headers:
            raise ValueError(f"header {name!r} is missing (not a Celery protocol-2 task message)")
        if not isinstance(value, types):
            raise ValueError(f"header {name!r} must be {_names(types)}, not {type(value).__name__}")
        if longest is not None and isinstance(value, str) and len(value) > longest:
            raise ValueError(f"header {name!r} is longer than {longest} characters")
    for name in _COUNTS:
        value = headers.get(name)
        if value is not None and (not _whole(value) or value < 0):
            raise ValueError(f"header {name!r} must be a whole number >= 0")
    _check_timelimit(headers.get("timelimit"))
    for name in ("eta", "expires"):
        _check_time(name, headers.get(name))
    _check_stamps(headers)
    enqueued = headers.get("enqueued_at")
    if enqueued is not None and not is_timestamp(enqueued):
        raise ValueError("header 'enqueued_at' must be a time in seconds since the epoch")


def _check_timelimit(value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise ValueError("header 'timelimit' must be a [hard, soft] pair")
    for limit in value:
        if limit is not None and (not _number(limit) or not 0 <= limit <= MAX_TIMELIMIT):
            raise ValueError(f"header 'timelimit' holds seconds from 0 to {MAX_TIMELIMIT:.0f}, or null")


def _check_time(name: str, value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, str) or len(value) > 64:
        raise ValueError(f"header {name!r} must be an ISO 8601 time")
    when = _parse_time(value)  # ValueError when it is not one
    if not 2000 <= when.year <= 2200:
        raise ValueError(f"header {name!r} is out of range")


def _parse_time(value: str) -> datetime:
    """The parser Celery's worker uses (dateutil's isoparse), and Python's, must both accept it."""
    try:
        from dateutil.parser import isoparse
    except ImportError:  # pragma: no cover - dateutil comes with Celery
        return datetime.fromisoformat(value)
    datetime.fromisoformat(value)
    return isoparse(value)


def _check_stamps(headers: dict[str, Any]) -> None:
    stamped = headers.get("stamped_headers")
    if stamped is None:
        return
    stamps = headers.get("stamps") or {}
    if not isinstance(stamped, list) or not all(isinstance(s, str) and s in stamps for s in stamped):
        raise ValueError("header 'stamped_headers' must list names of 'stamps'")


def check_body(body: Any) -> None:
    """Raise ValueError unless ``body`` is ``[args, kwargs, embed]`` with keyword names as strings,
    nested at most MAX_DEPTH levels, embedding no further messages (Embedded)."""
    if not isinstance(body, list | tuple) or len(body) != 3:
        raise ValueError("the body must be an [args, kwargs, embed] triple")
    args, kwargs, embed = body
    if not isinstance(args, list | tuple) or not isinstance(kwargs, dict):
        raise ValueError("the body's args must be an array and its kwargs an object")
    if not all(isinstance(key, str) for key in kwargs):
        raise ValueError("keyword argument names must be strings")
    if embed is not None and not isinstance(embed, dict):
        raise ValueError("the body's embed must be an object")
    carried = [name for name in EMBEDDED if (embed or {}).get(name)]
    if carried:
        raise Embedded(f"embeds {', '.join(carried)}: a worker never publishes messages a queue element carries")
    if depth([args, kwargs], MAX_DEPTH + 1) > MAX_DEPTH + 1:
        raise ValueError(f"the arguments nest deeper than {MAX_DEPTH} levels")


def depth(value: Any, limit: int) -> int:
    """Levels of nested lists and dicts in ``value`` (0 for a scalar), counted without recursion;
    stops at ``limit`` + 1."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        elif not isinstance(item, list | tuple):
            continue
        deepest = max(deepest, level)
        if deepest > limit:
            return deepest
        stack.extend((child, level + 1) for child in item if isinstance(child, list | tuple | dict))
    return deepest


def is_timestamp(value: Any) -> bool:
    """Whether ``value`` is a plausible time in seconds since the epoch (a number, finite, 0 to year 9999)."""
    return _number(value) and 0 <= value < 253402300800


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _names(types: tuple[type, ...]) -> str:
    return " or ".join("null" if t is type(None) else t.__name__ for t in types)
