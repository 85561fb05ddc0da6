"""Job methods: naming, resolving, and the allowlist (only installed apps' code may run).

A method is allowed when it is a function (or a method of a class) *defined* in a module of an
installed app. ``resolve`` walks the dotted path by importing modules of the app package only,
then takes at most ``Class.method`` inside the module, and checks the found object's
``__module__``. So ``myapp.tasks.os.system`` (an attribute walk through a module ``tasks``
imported), ``jobs_demo.tasks.__loader__.get_data`` (a dunder) or ``myapp.tasks.sleep`` after
``from time import sleep`` (a callable that merely lives in the app's namespace) are refused.
The same function guards enqueue, callbacks, job hooks, the scheduler and every message a worker
takes (forged ones included). Config ``allowed_methods`` names further methods exactly; they are
resolved by the same rule with their top-level package in the app's place.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import re
import sys
from collections.abc import Callable, Iterable
from types import ModuleType
from typing import Any

from benchcelery.bench.names import check_method_path, clip
from benchcelery.errors import ValidationError

MAX_REMEMBERED = 4096  # admitted (name, apps, allowlist) kept; refused names are never kept
_cache: dict[tuple[str, str], Callable[..., Any]] = {}
# (name, apps, allowlist) -> the function check_allowed and _walk admitted for them
_allowed: dict[tuple[str, tuple[str, ...], tuple[str, ...]], Callable[..., Any]] = {}


def method_name(method: str | Callable[..., Any]) -> str:
    """The dotted path of a method given as a string or a function object."""
    if isinstance(method, str):
        return method.strip()
    module = getattr(method, "__module__", None)
    qualname = getattr(method, "__qualname__", None)
    if not module or not qualname or "<" in qualname:
        raise ValidationError(f"Method {clip(repr(method))} must be a module-level function or a dotted path")
    return f"{module}.{qualname}"


# Packages an apps.txt line may never name, even if written there by hand: the standard library
# and the engine itself (their functions are defined "in the app" by construction).
ENGINE_PACKAGES = frozenset({"benchcelery", "celery", "kombu", "billiard", "redbeat", "redis", "click", "vine"})


def shadowed_module(name: str) -> str | None:
    """What an app called ``name`` would shadow (a stdlib or installed module), or None."""
    if name in sys.stdlib_module_names or name in sys.builtin_module_names or name in ENGINE_PACKAGES:
        return f"{name} (standard library or engine)"
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    return f"{name} ({spec.origin or 'namespace package'})"


def check_allowed(name: str, apps: Iterable[str], extra: Iterable[str] = ()) -> str:
    """Check the shape of ``name`` and that its package is an installed app (or that ``name`` is
    allowlisted); returns the package whose code ``name`` must be defined in. Imports nothing."""
    parts = check_method_path(name)
    if name in set(extra):
        return parts[0]
    apps = list(apps)
    if parts[0] not in apps:
        installed = ", ".join(apps) or "none"
        raise ValidationError(f"Method {name} is not in an installed app (installed: {installed})")
    if parts[0] in sys.stdlib_module_names or parts[0] in ENGINE_PACKAGES:
        raise ValidationError(f"Method {name} is refused: apps.txt names {parts[0]}, which is not an app")
    return parts[0]


def resolve(name: str, apps: Iterable[str], extra: Iterable[str] = ()) -> Callable[..., Any]:
    """Import and return the function ``name`` after checking the allowlist; raises ValidationError."""
    apps, extra = tuple(apps), tuple(extra)
    key = (name, apps, extra)
    try:
        fn, remember = _allowed.get(key), True
    except TypeError:  # not a string (check_allowed refuses it), or an allowlist of odd values
        fn, remember = None, False
    if fn is not None:  # checked already against the same apps and allowlist (workers ask for every job)
        return fn
    package = check_allowed(name, apps, extra)
    fn = _cache.get((name, package))
    if fn is None:
        fn = _walk(name, package)
        _cache[(name, package)] = fn
    if remember:
        if len(_allowed) >= MAX_REMEMBERED:  # apps.txt or the allowlist changed many times
            _allowed.clear()
        _allowed[key] = fn
    return fn


def _walk(name: str, package: str) -> Callable[..., Any]:
    parts = name.split(".")
    module: ModuleType | None = None
    rest: list[str] = []
    # The longest prefix that is a module of the package; at most Class.method may follow it.
    for cut in range(len(parts) - 1, max(0, len(parts) - 3), -1):
        module = _import(".".join(parts[:cut]), package, name)
        if module is not None:
            rest = parts[cut:]
            break
    if module is None:
        raise ValidationError(f"Method {name} cannot be imported: no module of {package} holds it")
    target: Any = getattr(module, rest[0], None)
    if target is None:
        hint = _stale_hint(module, rest[0])
        raise ValidationError(f"Method {name} cannot be imported: {module.__name__} has no attribute {rest[0]}{hint}")
    if isinstance(target, ModuleType):
        raise ValidationError(f"Method {name} is refused: {rest[0]} is a module, not a function")
    if len(rest) == 2:
        if not inspect.isclass(target) or not _defined_in(target, package):
            raise ValidationError(f"Method {name} is refused: {rest[0]} is not a class defined in {package}")
        target = getattr(target, rest[1], None)
        if target is None:
            raise ValidationError(f"Method {name} cannot be imported: {rest[0]} has no attribute {rest[1]}")
    if not (inspect.isfunction(target) or inspect.ismethod(target)):
        # A decorated function (functools.wraps: lru_cache, ...) counts when what it wraps does.
        inner = inspect.unwrap(target) if callable(target) and hasattr(target, "__wrapped__") else None
        if not (inspect.isfunction(inner) and _defined_in(inner, package)):
            raise ValidationError(f"Method {name} is refused: it is not a function")
    if not _defined_in(target, package):
        where = getattr(target, "__module__", None) or "?"
        raise ValidationError(f"Method {name} is refused: it is defined in {where}, not in {package}")
    return target  # type: ignore[no-any-return]


def _stale_hint(module: ModuleType, attribute: str) -> str:
    """When ``module``'s file on disk now defines ``attribute``: this process loaded the module before
    that change (it runs older code than enqueue checked against), so the fix is a restart or
    running workers with reload on change."""
    try:
        with open(module.__file__ or "", encoding="utf-8", errors="replace") as source:
            text = source.read()
    except OSError:
        return ""
    if not re.search(rf"^(?:async\s+def|def|class)\s+{re.escape(attribute)}\b", text, re.M):
        return ""
    return (
        f" (this worker loaded {module.__name__} before {attribute} was added: restart the workers, or run"
        " them with reload on change (`bench start`, `bench worker --reload`); then bench jobs retry)"
    )


def _import(module_name: str, package: str, name: str) -> ModuleType | None:
    """The module ``module_name`` when it exists inside ``package``; None when there is none."""
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(f"{exc.name}.")):
            return None  # no such module (or a parent is not a package)
        raise ValidationError(f"Method {name} cannot be imported: {clip(exc)}") from None
    except Exception as exc:  # the app's module itself is broken
        raise ValidationError(f"Method {name} cannot be imported: {type(exc).__name__}: {clip(exc)}") from None
    if module.__name__ != module_name or not _in_package(module.__name__, package):
        return None
    return module


def _in_package(module: str, package: str) -> bool:
    return module == package or module.startswith(f"{package}.")


def _defined_in(obj: Any, package: str) -> bool:
    module = getattr(obj, "__module__", None)
    return isinstance(module, str) and _in_package(module, package)
