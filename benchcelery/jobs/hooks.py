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


_accepted: dict[Any, frozenset[str] | None] = {}


def call_hook(hook: Callable[..., Any], **kwargs: Any) -> Any:
    """Call a job hook the way Frappe does (keyword arguments: ``method``, ``kwargs``,
    ``transaction_type`` / ``result``), passing only the names it takes: a hook written for the
    older call (``def before_job(method, kwargs)``) still works."""
    try:
        names = _accepted[hook]
    except (KeyError, TypeError):
        names = _parameters(hook)
        try:
            _accepted[hook] = names
        except TypeError:  # an unhashable callable: asked again next time
            pass
    if names is not None:
        kwargs = {k: v for k, v in kwargs.items() if k in names}
    return hook(**kwargs)


def _parameters(fn: Callable[..., Any]) -> frozenset[str] | None:
    """The keyword names ``fn`` takes; None when it takes any (``**kwargs``) or cannot be inspected."""
    import inspect

    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return frozenset(p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
