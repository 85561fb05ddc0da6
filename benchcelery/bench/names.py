"""The shape of names users give: queue names and dotted method paths.

Syntax only: whether a method is allowed to run (an installed app's function) is
``benchcelery.jobs.methods``' question, asked with ``check_method_path`` first.
"""

from __future__ import annotations

import re
from typing import Any

from benchcelery.errors import ValidationError

QUEUE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}\Z")
METHOD_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+\Z")
MAX_ECHO = 200  # characters of user input an error message repeats
MAX_METHOD_PATH = 400  # a longer method name is refused outright


def clip(value: object, limit: int = MAX_ECHO) -> str:
    """``repr``-free text of user input for error messages, cut to ``limit`` characters."""
    text = str(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def queue_name_problem(name: Any) -> str | None:
    """What is wrong with a queue name (letters, digits, '_', '-'; at most 64), or None."""
    if isinstance(name, str) and QUEUE_NAME.match(name):
        return None
    return f"has an invalid queue name {clip(name, 100)!r} (letters, digits, '_', '-')"


def check_method_path(name: Any) -> list[str]:
    """The parts of a dotted method path (``myapp.tasks.send_report``); ValidationError when it is
    not one, or when a part starts with ``__``. Imports nothing."""
    if not isinstance(name, str) or len(name) > MAX_METHOD_PATH or not METHOD_PATH.match(name):
        raise ValidationError(f"Method {clip(name)!r} is not a dotted path like myapp.tasks.send_report")
    parts = name.split(".")
    if any(p.startswith("__") for p in parts):
        raise ValidationError(f"Method {name} is refused: no part of a method path may start with '__'")
    return parts
