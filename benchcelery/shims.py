"""A small ``frappe`` stand-in for the console, so the guide's snippets run as written:
``frappe.enqueue(...)``, ``frappe.cache().ping()``, ``frappe.local.site``."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any


def frappe_shim() -> Any:
    import benchcelery
    from benchcelery.runtime import get_runtime

    return SimpleNamespace(
        enqueue=benchcelery.enqueue,
        cache=lambda: get_runtime().redis,
        local=benchcelery.local,
        publish_realtime=getattr(benchcelery, "publish_realtime", None),
        get_job=benchcelery.get_job,
        is_job_enqueued=benchcelery.is_job_enqueued,
    )
