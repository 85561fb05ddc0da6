"""``frappe.utils`` of the stand-in: only the ``background_jobs`` submodule; any other name raises
when used (compat/frappe/_unavailable.py)."""

from __future__ import annotations

from typing import Any

from .._unavailable import module_getattr


def __getattr__(name: str) -> Any:
    return module_getattr("frappe.utils", name)
