"""Hypothesis strategies for queue elements and the check every element must pass, shared by
tests/test_fuzz.py (a fast subset) and benchmarks/fuzz.py (a long run).

An element starts as the envelope ``enqueue`` pushes and is mutated: headers, properties and
delivery info set to any JSON value, the body replaced (any JSON value, text, bad base64, deep
nesting, large arguments, embedded callbacks), or the whole element replaced by arbitrary text.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

from benchcelery.jobs.inspect import waiting_lists
from tests.forge import nested, push, set_body, valid_message

HEADERS = [
    "task", "id", "shadow", "eta", "expires", "group", "group_index", "retries", "timelimit", "root_id",
    "parent_id", "argsrepr", "kwargsrepr", "origin", "ignore_result", "replaced_task_nesting",
    "stamped_headers", "stamps", "site", "method", "event", "user", "job_name", "enqueued_at", "tracked",
    "on_success", "on_failure", "lang",
]  # fmt: skip
PROPERTIES = ["correlation_id", "reply_to", "delivery_mode", "delivery_info", "priority", "body_encoding"]
KINDS = ["header", "header", "property", "delivery_info", "body", "deep", "large", "embed", "raw", "top"]
TOP = ["body", "headers", "properties", "content-type", "content-encoding"]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.sampled_from([1e308, -1e308, 0.5, "abc", "", "site1.local::x", "2026-01-01T00:00:00", "1e999"]),
    st.text(max_size=30),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@st.composite
def mutation(draw: Any) -> tuple[str, Any]:
    kind = draw(st.sampled_from(KINDS))
    if kind == "header":
        return kind, (draw(st.sampled_from([*HEADERS, "x-other"])), draw(values))
    if kind == "property":
        return kind, (draw(st.sampled_from(PROPERTIES)), draw(values))
    if kind == "delivery_info":
        return kind, (draw(st.sampled_from(["routing_key", "exchange"])), draw(values))
    if kind == "body":
        return kind, draw(st.one_of(values, st.text(max_size=40).map(lambda t: ("text", t))))
    if kind == "deep":
        return kind, draw(st.sampled_from([10, 63, 64, 65, 1000, 5000, 200_000]))
    if kind == "large":
        return kind, draw(st.sampled_from([10_000, 100_000, 1_000_000]))
    if kind == "embed":
        return kind, (draw(st.sampled_from(["callbacks", "errbacks", "chain", "chord"])), draw(values))
    if kind == "raw":
        return kind, draw(st.one_of(st.text(max_size=60), st.sampled_from(["[]", "123", "null", nested(100_000)])))
    return kind, (draw(st.sampled_from(TOP)), draw(values))


def build(rt: Any, change: tuple[str, Any], n: int) -> str:
    """The element for mutation ``change`` of a valid message (which records ``fuzz`` = n when run)."""
    kind, what = change
    message = valid_message(rt, key="fuzz", value=n)
    if kind == "header":
        message["headers"][what[0]] = what[1]
    elif kind == "property":
        message["properties"][what[0]] = what[1]
    elif kind == "delivery_info":
        message["properties"]["delivery_info"][what[0]] = what[1]
    elif kind == "body":
        set_body(message, what[1] if isinstance(what, tuple) else what)
        if isinstance(what, tuple) and what[1]:
            message["body"] = what[1]  # not base64 at all
    elif kind == "deep":
        set_body(message, f'[[], {{"key": "fuzz", "value": {nested(what)}}}, {{}}]')
    elif kind == "large":
        set_body(message, [[], {"key": "fuzz", "value": "A" * what}, {}])
    elif kind == "embed":
        set_body(message, [[], {"key": "fuzz", "value": n}, {what[0]: what[1]}])
    elif kind == "raw":
        return str(what)
    else:
        message[what[0]] = what[1]
    return json.dumps(message)


@dataclass
class Tally:
    tried: int = 0
    ran: int = 0
    failed: int = 0
    worker_exits: int = 0
    errors: list[str] = field(default_factory=list)


def read_everything(invoke: Any, session: Any, ids: list[str]) -> list[str]:
    """Problems (tracebacks, 500s) of the read commands and pages over what waits now."""
    problems = []
    for args in (["jobs", "list", "--state", "queued"], ["jobs", "list", "-f", "json"], ["show-pending-jobs", "-v"]):
        result = invoke(["--site", "site1.local", *args])
        if result.exit_code != 0 or (result.exception is not None and not isinstance(result.exception, SystemExit)):
            problems.append(f"{' '.join(args)}: exit {result.exit_code} {result.exception!r} {result.output[-500:]}")
    pages = ["/jobs?site=site1.local&queue=short", "/failed", "/"]
    pages += [f"/job?id={urllib.parse.quote(i)}" for i in ids]
    for path in pages:
        status, body, _ = session.request(path)
        if status >= 500:
            problems.append(f"{path}: {status} {body[-300:]}")
    return problems


def element_id(element: str) -> list[str]:
    try:
        value = json.loads(element)["headers"]["id"]
    except Exception:
        return []
    return [value] if isinstance(value, str) and len(value) < 200 else []


def settle(bench: Any, rt: Any, worker: Any, since: float, before_ran: int, deadline: float = 30) -> str:
    """Wait until the element served by ``worker`` was run or recorded as failed: 'ran', 'failed',
    or what went wrong."""
    from benchcelery.jobs import registry

    keys, r = rt.keys, bench.redis
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if worker.poll() is not None:
            return "worker exited"
        # kombu's list (where push() puts it), the site's list once a worker moved it, or in flight
        waiting = sum(r.llen(k) for k in waiting_lists(r, keys, "default")) + r.hlen(keys.unacked)
        if not waiting:
            if r.llen("test:fuzz") > before_ran:
                return "ran"
            ids = registry.failed_ids(r, keys, "default")
            if any((rec.get("failed_at") or 0) >= since for rec in registry.failed_records(r, keys, "default", ids)):
                return "failed"
        time.sleep(0.02)
    return "neither run nor recorded"


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def try_element(bench: Any, rt: Any, worker: Any, invoke: Any, session: Any, element: str, tally: Tally) -> None:
    """Push ``element`` where no worker serves it, read every command and page, then move it to
    the worker's queue and wait for its outcome."""
    keys, r = rt.keys, bench.redis
    tally.tried += 1
    push(r, keys, "short", element)
    tally.errors += read_everything(invoke, session, element_id(element))
    r.delete(*waiting_lists(r, keys, "short"), keys.pending_counts("short"), keys.sites("short"))
    since, before = time.time() - 0.001, r.llen("test:fuzz")
    push(r, keys, "default", element)
    outcome = settle(bench, rt, worker, since, before)
    if outcome == "ran":
        tally.ran += 1
    elif outcome == "failed":
        tally.failed += 1
    else:
        tally.errors.append(f"{outcome}: {element[:200]!r}")
