"""Values written into Redis, ACL, supervisor and systemd files are validated or quoted here.

A newline in a value would add a line of the attacker's choosing (``[program:evil]``,
``ExecStartPre=``, a second ACL user). So a user name must be a POSIX account name, and a path may
hold no control character. Everything else a path may hold is quoted for the file it goes into:
supervisor values double their ``%`` and commands are shell-quoted (supervisor splits them with
shlex); systemd values double their ``%``, and ``ExecStart=`` words are double-quoted with ``$``
doubled (systemd.syntax); Redis config paths are double-quoted. Supervisor's ini reader cuts a value
at whitespace followed by ``;`` or ``#`` (an inline comment) with no way to escape it, so such
paths are refused (at ``bench init`` too).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from benchcelery.errors import ValidationError

# POSIX portable user names (plus the optional trailing $ of machine accounts), at most 32 characters.
_USER = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?$")
_UNSAFE = re.compile(r"[\x00-\x1f\x7f]")
_INI_COMMENT = re.compile(r"\s[;#]")  # configparser's inline comment: cannot be escaped
_SYSTEMD_PLAIN = re.compile(r"^[A-Za-z0-9_@%+=:,./-]+\Z")


def check_user(user: str) -> str:
    """``user`` when it is a plain account name; raises ValidationError (nothing is written)."""
    if not _USER.match(user):
        raise ValidationError(f"--user must be a user name (letters, digits, '_', '.', '-'), got {user[:100]!r}")
    return user


def check_path(path: Path | str, what: str = "bench path", advice: str = "move the bench") -> str:
    """``path`` as text when every deploy file can hold it: no control character, no whitespace
    followed by ';' or '#', no leading or trailing whitespace or trailing backslash; raises
    ValidationError naming what to change."""
    text = str(path)
    if _UNSAFE.search(text):
        raise ValidationError(f"The {what} {text[:200]!r} holds a control character; {advice}")
    if _INI_COMMENT.search(text) or text != text.strip() or text.endswith("\\"):
        raise ValidationError(
            f"The {what} {text[:200]!r} holds a space before ';' or '#' (supervisor would cut the line there) "
            f"or ends with a space or backslash; {advice}"
        )
    return text


def supervisor_value(path: Path | str) -> str:
    """A path as a supervisor value (``directory=``, ``stdout_logfile=``): ``%`` doubled."""
    return check_path(path, "path").replace("%", "%%")


def supervisor_logfile(path: Path | str) -> str:
    """A path as ``stdout_logfile=``: supervisor expands log file names twice (as it reads the
    value, then again as a log file name), so each ``%`` is written four times."""
    return check_path(path, "path").replace("%", "%%%%")


def supervisor_command(argv: list[str]) -> str:
    """``command=`` for supervisor: each word shell-quoted (supervisor splits with shlex), ``%`` doubled."""
    for word in argv:
        check_path(word, "command word")
    return shlex.join(argv).replace("%", "%%")


def systemd_value(path: Path | str) -> str:
    """A path as a systemd value (``WorkingDirectory=``, ``append:``): ``%`` doubled (specifiers)."""
    return check_path(path, "path").replace("%", "%%")


def systemd_command(argv: list[str]) -> str:
    """``ExecStart=`` words: plain when plain, else double-quoted with ``\\`` and ``"`` escaped;
    ``%`` and ``$`` doubled (specifiers and variables, which systemd expands in quotes too)."""
    words = []
    for word in argv:
        check_path(word, "command word")
        text = word.replace("%", "%%").replace("$", "$$")
        if not _SYSTEMD_PLAIN.match(text):
            text = '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
        words.append(text)
    return " ".join(words)


def redis_quote(value: Path | str) -> str:
    """A Redis config argument, double-quoted (backslashes and quotes escaped)."""
    text = check_path(value, "path")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
