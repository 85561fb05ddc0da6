"""Apps' ``hooks.py``: ``before_job`` / ``after_job`` and ``scheduler_events`` (Frappe's format)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable
from typing import Any

from benchcelery.jobs.methods import resolve


def app_hooks(app: str, reload: bool = False) -> Any | None:
    """The app's ``<app>.hooks`` module, or None when it has none."""
    try:
        module = importlib.import_module(f"{app}.hooks")
    except ModuleNotFoundError as exc:
        if exc.name in (app, f"{app}.hooks"):
            return None
        raise
    return importlib.reload(module) if reload else module


def hook_values(apps: Iterable[str], name: str) -> list[Any]:
    """Every app's value(s) for a list-valued hook, in apps.txt order."""
    values: list[Any] = []
    for app in apps:
        module = app_hooks(app)
        value = getattr(module, name, None) if module else None
        if value is None:
            continue
        values.extend(value if isinstance(value, list | tuple) else [value])
    return values


_job_hooks: dict[tuple[tuple[str, ...], str], tuple[tuple[Any, ...], list[Callable[..., Any]]]] = {}


def job_hooks(apps: list[str], name: str) -> list[Callable[..., Any]]:
    """``before_job`` / ``after_job`` callables of the installed apps (looked up once per set of
    apps and hooks modules: workers ask for every job)."""
    key = (tuple(apps), name)
    modules = tuple(sys.modules.get(f"{app}.hooks") for app in apps)
    hit = _job_hooks.get(key)
    if hit is not None and hit[0] == modules:
        return hit[1]
    hooks = [h if callable(h) else resolve(str(h), apps) for h in hook_values(apps, name)]
    _job_hooks[key] = (tuple(sys.modules.get(f"{app}.hooks") for app in apps), hooks)
    return hooks
