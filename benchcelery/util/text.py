"""Text shown on a terminal: job data (ids, methods, kwargs, exception text, tracebacks) comes from
whoever can write to the queue, so its control characters are rendered visibly, never sent raw.

An escape such as ``\\x1b]0;title\\x07`` would otherwise retitle, clear or rewrite the operator's
terminal, and OSC sequences survive ``| less -R`` and many log viewers. JSON output needs none of
this: ``json.dumps`` escapes control characters already.

Also ``age``: a duration as ``bench top`` and the dashboard show it.
"""

from __future__ import annotations

import logging
import re

# C0 and C1 controls and DEL, plus the bidirectional overrides that reorder what a line shows.
_CONTROL = "\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069"
_ANY_CONTROL = re.compile(f"[{_CONTROL}\t\n]")
_CONTROL_BUT_LINES = re.compile(f"[{_CONTROL}]")


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    return f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}"


def visible(text: str, lines: bool = True) -> str:
    """``text`` with every control character written as ``\\xNN`` (``\\uNNNN`` for the bidi
    overrides). Line breaks and tabs are kept when ``lines`` (a traceback, a report), escaped too
    when not (a table cell, a one-line error)."""
    pattern = _CONTROL_BUT_LINES if lines else _ANY_CONTROL
    return pattern.sub(_escape, text)


class VisibleLogFilter(logging.Filter):
    """A handler filter writing a record's message and traceback with ``visible``: a worker's log
    lines carry job ids and exception text. Colours a formatter adds afterwards are untouched."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = visible(record.getMessage()), None
        if record.exc_info and not record.exc_text:
            record.exc_text = visible(logging.Formatter().formatException(record.exc_info))
        return True


def filter_handlers(logger: logging.Logger) -> None:
    """Add ``VisibleLogFilter`` to each of ``logger``'s handlers (once)."""
    for handler in logger.handlers:
        if not any(isinstance(f, VisibleLogFilter) for f in handler.filters):
            handler.addFilter(VisibleLogFilter())


def age(seconds: float | None, minute_seconds: bool = False) -> str:
    """'42s', '3m' ('3m05s' with ``minute_seconds``), '2h05m', '3d4h'; '-' for None."""
    if seconds is None:
        return "-"
    s = int(max(0, seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s" if minute_seconds else f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600}h"
