"""``bench --site S execute METHOD``: run one app function now, in this process, in a site's context.

The same context a job gets (``local.site``, ``local.conf`` merged for the site, ``local.user``,
the ``frappe`` stand-in) and the same allowlist as enqueue (``methods.resolve``): only functions
defined in the bench's apps (or named by ``allowed_methods``) run. Arguments are Python literals or
JSON, parsed with ``ast.literal_eval`` / ``json.loads`` (never ``eval``). No worker is involved and
no job is recorded: ``before_job``/``after_job`` hooks do not run (Frappe's ``execute`` runs none).
"""

from __future__ import annotations

import ast
import cProfile
import io
import json
import pstats
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from benchcelery.bench.layout import Bench
from benchcelery.context import local
from benchcelery.errors import ValidationError
from benchcelery.jobs.methods import clip

PROFILE_LINES = 30  # functions shown by --profile, by cumulative time


def parse_literal(text: str | None, kind: type, option: str) -> Any:
    """``text`` as a Python literal or JSON value of type ``kind`` (list or dict); None → empty."""
    if text is None or not text.strip():
        return kind()
    try:
        value = json.loads(text)
    except ValueError:
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            raise ValidationError(f"{option} must be a Python literal or JSON, got {clip(text)}") from None
    if kind is list and isinstance(value, tuple):
        value = list(value)
    if kind is list and not isinstance(value, list):
        value = [value]  # Frappe: --args "1" is one argument
    if not isinstance(value, kind):
        raise ValidationError(f"{option} must be a {'dict' if kind is dict else 'list'}, got {clip(text)}")
    return value


@dataclass
class Outcome:
    site: str
    ok: bool
    value: Any = None
    error: str | None = None  # one line: "ExcType: message"
    traceback: str | None = None
    profile: str | None = None


def execute(
    bench: Bench,
    site: str,
    method: str,
    args: list[Any] | None = None,
    kwargs: dict[str, Any] | None = None,
    profile: bool = False,
) -> Outcome:
    """Run ``method(*args, **kwargs)`` for ``site``; an exception of the method is caught into the
    Outcome. Raises ValidationError (method not allowed / not found) before anything runs."""
    import traceback

    from benchcelery.compat.console import install_console_shims
    from benchcelery.jobs.methods import resolve
    from benchcelery.runtime import init

    rt = init(site=site, bench_path=str(bench.root))
    fn = resolve(method, rt.apps(), rt.allowed_methods())
    install_console_shims()
    local.site, local.conf, local.user, local.job = site, bench.merged_config(site), "Administrator", None
    profiler = cProfile.Profile() if profile else None
    try:
        value = _call(fn, args or [], kwargs or {}, profiler)
    except Exception as exc:
        return Outcome(site, False, error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
    finally:
        local.reset()
    return Outcome(site, True, value=value, profile=_stats(profiler) if profiler else None)


def _call(fn: Callable[..., Any], args: list[Any], kwargs: dict[str, Any], profiler: cProfile.Profile | None) -> Any:
    if profiler is None:
        return fn(*args, **kwargs)
    return profiler.runcall(fn, *args, **kwargs)


def _stats(profiler: cProfile.Profile) -> str:
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(PROFILE_LINES)
    return out.getvalue()


def to_json(value: Any) -> str:
    """The return value as JSON (values JSON has no type for are shown with ``str``)."""
    return json.dumps(value, default=str, indent=1 if isinstance(value, dict | list) else None)
