"""Job methods: naming, resolving, and the allowlist (only installed apps' code may run).

A message naming ``os.system`` is refused at enqueue time and, should one arrive anyway, recorded
as failed by the worker without importing anything.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterable
from typing import Any

from benchcelery.errors import ValidationError

_DOTTED = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")
_cache: dict[str, Callable[..., Any]] = {}


def method_name(method: str | Callable[..., Any]) -> str:
    """The dotted path of a method given as a string or a function object."""
    if isinstance(method, str):
        return method.strip()
    module = getattr(method, "__module__", None)
    qualname = getattr(method, "__qualname__", None)
    if not module or not qualname or "<" in qualname:
        raise ValidationError(f"Method {method!r} must be a module-level function or a dotted path")
    return f"{module}.{qualname}"


def check_allowed(name: str, apps: Iterable[str], extra: Iterable[str] = ()) -> None:
    """Raise ValidationError unless ``name`` is a dotted path inside an installed app (or allowlisted)."""
    if not _DOTTED.match(name):
        raise ValidationError(f"Method {name!r} is not a dotted path like myapp.tasks.send_report")
    if name in set(extra):
        return
    apps = list(apps)
    if name.split(".", 1)[0] not in apps:
        installed = ", ".join(apps) or "none"
        raise ValidationError(f"Method {name} is not in an installed app (installed: {installed})")


def resolved(name: str) -> bool:
    """Whether ``resolve(name, ...)`` already succeeded in this process (it returns the cached
    function then, whatever apps it is given)."""
    return name in _cache


def resolve(name: str, apps: Iterable[str], extra: Iterable[str] = ()) -> Callable[..., Any]:
    """Import and return the function ``name`` after checking the allowlist."""
    fn = _cache.get(name)
    if fn is not None:
        return fn
    check_allowed(name, apps, extra)
    module_name, _, attr = name.rpartition(".")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError:
        # A class method, e.g. myapp.models.Report.build
        parent, _, cls = module_name.rpartition(".")
        try:
            target = getattr(importlib.import_module(parent), cls)
        except (ImportError, AttributeError, ValueError) as exc:
            raise ValidationError(f"Method {name} cannot be imported: {exc}") from None
    fn = getattr(target, attr, None)
    if fn is None:
        raise ValidationError(f"Method {name} cannot be imported: {module_name} has no attribute {attr}")
    if not callable(fn):
        raise ValidationError(f"Method {name} is not callable")
    _cache[name] = fn
    return fn
