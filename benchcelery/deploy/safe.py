"""Values written into Redis, ACL, supervisor and systemd files are validated or quoted here.

A newline in a value would add a line of the attacker's choosing (``[program:evil]``,
``ExecStartPre=``, a second ACL user); ``%`` is expanded by both supervisor and systemd. So a user
name must be a POSIX account name, and a path may hold neither control characters nor ``%``.
Redis config values that are paths are double-quoted (a space would otherwise split them).
"""

from __future__ import annotations

import re
from pathlib import Path

from benchcelery.errors import ValidationError

# POSIX portable user names (plus the optional trailing $ of machine accounts), at most 32 characters.
_USER = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?$")
_UNSAFE = re.compile(r"[\x00-\x1f\x7f%]")


def check_user(user: str) -> str:
    """``user`` when it is a plain account name; raises ValidationError (nothing is written)."""
    if not _USER.match(user):
        raise ValidationError(f"--user must be a user name (letters, digits, '_', '.', '-'), got {user[:100]!r}")
    return user


def check_path(path: Path | str, what: str = "bench path") -> str:
    """``path`` as text when it holds no control character and no '%'; raises ValidationError."""
    text = str(path)
    if _UNSAFE.search(text):
        raise ValidationError(f"The {what} {text[:200]!r} holds a control character or '%'; move the bench")
    return text


def redis_quote(value: Path | str) -> str:
    """A Redis config argument, double-quoted (backslashes and quotes escaped)."""
    text = check_path(value, "path")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
