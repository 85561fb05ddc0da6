"""The Celery message of a job, built directly: the JSON kombu's Redis transport stores for
``apply_async`` (protocol 2), without Celery (tests compare it field by field with one made by
``apply_async`` given the same options). bulk.py pushes it.

A single ``enqueue`` passes the message's *shape* (what is the same for every job of one method,
site, queue and user: ``enqueue._prepare``): its text is then made once per shape and process, with
holes for what differs per job (id, arguments, enqueue time, delivery tag).
"""

from __future__ import annotations

import base64
import json
import os
import socket
import threading
import uuid
from collections.abc import Callable, Hashable, Iterator
from typing import Any

from benchcelery.errors import ValidationError

REPR_MAXSIZE = 1024  # Celery's kwargsrepr_maxsize
# The body's embed part and the envelope's constant parts, as Celery writes them.
_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
_EMPTY_BODY = base64.b64encode(json.dumps([[], {}, _EMBED]).encode()).decode()
_str = json.encoder.encode_basestring_ascii  # type: ignore[attr-defined]  # json.dumps' own
_NODE = uuid.uuid4().int  # kombu's get_node_id(): random per process
_local = threading.local()  # sender() per thread


def _plain_encoder() -> Callable[[Any], str] | None:
    """``json.dumps`` (default arguments) without building its C encoder for every call (a third of
    a header's encoding); None when the C encoder is missing. Circular data recurses until
    RecursionError instead of json's ValueError (``_dumps`` then says what is wrong)."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return None
    try:
        encoder = make(None, json.JSONEncoder().default, _str, None, ": ", ", ", False, False, True)
    except TypeError:  # another signature
        return None

    def encode(data: Any) -> str:
        return "".join(encoder(data, 0))

    return encode if encode({"a": [1, 2.5, None, True, "é"]}) == json.dumps({"a": [1, 2.5, None, True, "é"]}) else None


_encode_plain = _plain_encoder()


def _fast_dumps(data: Any) -> str:
    """``_dumps`` of data that is almost always plain (headers, job arguments), the common case first."""
    if _encode_plain is not None:
        try:
            return _encode_plain(data)
        except (TypeError, ValueError, RecursionError):
            pass  # not plain JSON, not finite, or circular: _dumps says which, or uses kombu's encoder
    return _dumps(data)


def _dumps(data: Any) -> str:
    """kombu's JSON (the same bytes as ``json.dumps`` for plain data; kombu's encoder only for the
    types it adds: datetime, Decimal, UUID, ...). Raises ValidationError when it cannot encode."""
    try:
        return json.dumps(data)
    except TypeError:
        pass
    except ValueError as exc:
        raise ValidationError(f"Job arguments must be JSON-serialisable: {exc}") from None
    except RecursionError:
        raise ValidationError("Job arguments are nested too deeply") from None
    from kombu.utils.json import dumps as kombu_dumps

    try:
        return kombu_dumps(data)
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"Job arguments must be JSON-serialisable: {exc}") from None
    except RecursionError:
        raise ValidationError("Job arguments are nested too deeply") from None


def kwargs_repr(kwargs: dict[str, Any]) -> str:
    """The ``kwargsrepr`` header (what Flower and ``celery inspect`` show): ``repr`` cut to Celery's
    1,024 characters. Job arguments are plain data, so Celery's ``saferepr`` (twenty times slower,
    a third of a small job's enqueue) has nothing to guard against; enqueue passes this to Celery
    the way ``apply_async(kwargsrepr=...)`` takes it. Raises ValidationError when ``repr`` fails."""
    try:
        text = repr(kwargs)
    except Exception as exc:  # RecursionError included
        raise ValidationError(f"Job arguments must be JSON-serialisable: {type(exc).__name__}") from None
    return text if len(text) <= REPR_MAXSIZE else f"{text[: REPR_MAXSIZE - 3]}..."


def sender() -> tuple[str, str]:
    """(origin, reply_to) of messages sent from this process and thread, as Celery names them:
    ``gen<pid>@<host>`` and the app's per-thread oid (``kombu.common.oid_from``)."""
    cached: tuple[str, str] | None = getattr(_local, "sender", None)
    if cached is None:  # once per thread (and again in a forked child: _forked makes _local anew)
        pid, thread = os.getpid(), threading.get_ident()
        oid = str(uuid.uuid3(uuid.NAMESPACE_OID, f"{_NODE:x}-{pid:x}-{thread:x}-{id(_local):x}"))
        cached = _local.sender = (f"gen{pid}@{socket.gethostname()}", oid)
    return cached


# kombu's Redis message of a Celery protocol-2 task call, as json.dumps writes it, with the
# variable parts as %s (each already JSON). Celery's header order; ``headers`` (ours) come last.
_TEMPLATE = (
    '{"body": "%s", "content-encoding": "utf-8", "content-type": "application/json", '
    '"headers": {"lang": "py", "task": %s, "id": %s, "shadow": %s, "eta": null, "expires": null, '
    '"group": null, "group_index": null, "retries": 0, "timelimit": [%s, %s], "root_id": %s, '
    '"parent_id": null, "argsrepr": %s, "kwargsrepr": %s, "origin": %s, "ignore_result": true, '
    '"replaced_task_nesting": 0, "stamped_headers": null, "stamps": {}%s}, '
    '"properties": {"correlation_id": %s, "reply_to": %s, "delivery_mode": 2, '
    '"delivery_info": {"exchange": "", "routing_key": %s}, "priority": %s, "body_encoding": "base64", '
    '"delivery_tag": %s}}'
)


def envelope(
    options: dict[str, Any], task_name: str, origin: str, reply_to: str, shape: Hashable | None = None
) -> str:
    """The JSON kombu would store for ``apply_async(**options)`` of ``task_name``: the same text
    ``json.dumps`` gives for Celery's message dict, written from a template (half the time).
    ``shape``: a key for everything in ``options`` but the id, arguments (and their ``kwargsrepr``
    header) and ``enqueued_at`` (``enqueue._prepare``); the text is then made from one kept per shape.

    Raises ValidationError when the arguments are not JSON-serialisable."""
    kwargs = options["kwargs"]
    body = base64.b64encode(_fast_dumps([[], kwargs, _EMBED]).encode()).decode() if kwargs else _EMPTY_BODY
    if shape is not None:
        key = (shape, task_name, origin, reply_to)
        template = _SHAPES.get(key)
        if template is None:
            template = _shape(key, options, task_name, origin, reply_to)
        if template:
            headers, job_id = options["headers"], _str(options["task_id"])
            shown = headers["kwargsrepr"] if "kwargsrepr" in headers else kwargs_repr(kwargs)
            at, shown = _number(headers["enqueued_at"]), _str(shown)
            return template % (body, job_id, job_id, shown, at, job_id, _str(uuid4_text()))
    at = options["headers"].get("enqueued_at")
    return _render(options, task_name, origin, reply_to, body, at, _str(uuid4_text()))


def _render(
    options: dict[str, Any], task_name: str, origin: str, reply_to: str, body: str, at: Any, tag: str
) -> str:
    job_id = _str(options["task_id"])
    ours = dict(options["headers"])
    if "enqueued_at" in ours:
        ours["enqueued_at"] = at
    # A header of ours that Celery also writes replaces Celery's value in place, as apply_async does.
    argsrepr = _str(ours.pop("argsrepr")) if "argsrepr" in ours else '"()"'
    kwargsrepr = _str(ours.pop("kwargsrepr")) if "kwargsrepr" in ours else _str(kwargs_repr(options["kwargs"]))
    rest = _fast_dumps(ours)
    return _TEMPLATE % (
        body,
        _str(task_name),
        job_id,
        _str(options["shadow"]),
        _number(options["time_limit"]),
        _number(options["soft_time_limit"]),
        job_id,
        argsrepr,
        kwargsrepr,
        _str(origin),
        ", " + rest[1:-1] if len(rest) > 2 else "",
        job_id,
        _str(reply_to),
        _str(options["queue"]),
        _number(options["priority"]),
        tag,
    )


# (shape, task name, origin, reply_to) -> the message's text with a %s for each part that differs
# per job (in the order envelope passes them), or "" when that shape cannot be templated
_SHAPES: dict[Hashable, str] = {}
_HOLE = "\x00hole\x00"  # in a JSON string: \u0000hole\u0000 (no real value renders like that)


def _shape(key: Hashable, options: dict[str, Any], task_name: str, origin: str, reply_to: str) -> str:
    """The template of ``key``: the message rendered with markers where the per-job parts go, then
    each marker made a %s (the rest's % doubled). Checked: each marker must show where expected."""
    marked = {**options, "task_id": _HOLE, "headers": {**options["headers"], "kwargsrepr": _HOLE}}
    text = _render(marked, task_name, origin, reply_to, _HOLE, _HOLE, _str(_HOLE)).replace("%", "%%")
    quoted = _str(_HOLE)
    template = text.replace(quoted, "%s").replace(_HOLE, "%s")
    expected = ("body", "id", "root_id", "kwargsrepr", "enqueued_at", "correlation_id", "delivery_tag")
    names = [_key_before(template, at) for at in _positions(template, "%s")]
    if len(_SHAPES) >= 1024:
        _SHAPES.clear()
    _SHAPES[key] = template if names == list(expected) and text.count(quoted) == 6 else ""
    return _SHAPES[key]


def _key_before(text: str, at: int) -> str:
    """The JSON key whose value holds position ``at``."""
    colon = text.rfind('": ', 0, at)
    return text[text.rfind('"', 0, colon) + 1 : colon]


def _positions(text: str, part: str) -> list[int]:
    found, at = [], text.find(part)
    while at >= 0:
        found.append(at)
        at = text.find(part, at + len(part))
    return found


class _Random(threading.local):
    """uuids made ahead, per thread: one ``os.urandom`` (a getrandom system call) per RANDOM_BATCH
    of them, not two per enqueue (its id and its delivery tag). Taken with one ``next`` (a signal
    handler that enqueues between two takes cannot get the same one)."""

    texts: Iterator[str] = iter(())


RANDOM_BATCH = 64
_random = _Random()


def _forked() -> None:
    """In a forked child: its own sender names, and what the parent made ahead is the parent's
    (its next ids), never reused. (No getpid per call to notice a fork.)"""
    global _local, _random
    _local, _random = threading.local(), _Random()


os.register_at_fork(after_in_child=_forked)


def uuid4_text() -> str:
    """``str(uuid.uuid4())`` from ``os.urandom`` bytes, without the UUID object (a third of the time)."""
    text = next(_random.texts, None)
    if text is None:
        hexes = os.urandom(16 * RANDOM_BATCH).hex()
        made = [hexes[at : at + 32] for at in range(0, len(hexes), 32)]
        texts = iter([f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}" for h in made])
        _random.texts = texts
        text = next(texts)
    return text


_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}  # RFC 4122's variant bits 10xx


def _number(value: Any) -> str:
    kind = type(value)
    if kind is int:
        return int.__repr__(value)
    if kind is float:
        return float.__repr__(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"expected a number, got {value!r}")
    return float.__repr__(value) if isinstance(value, float) else int.__repr__(value)
