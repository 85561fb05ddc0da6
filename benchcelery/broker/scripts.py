"""The Lua of the delivery scripts (delivery.py), read from ``lua/<name>.lua`` once at import.

Each file opens with a header of ``--`` comment lines (what the script does, its KEYS and ARGV, the
keys it touches); the header is documentation and is not sent to Redis. A line
``--#include <name>`` is replaced by the body of ``lua/<name>.lua`` (snippets shared by several
scripts are named ``_<name>``). The body is sent exactly as written, blank lines included.
"""

from __future__ import annotations

from importlib.resources import files

_INCLUDE = "--#include "


def load(name: str) -> str:
    """The script ``lua/<name>.lua`` as Redis runs it: header dropped, includes expanded."""
    text = (files(__package__) / "lua" / f"{name}.lua").read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    start = 0
    while start < len(lines) and lines[start].startswith("--") and not lines[start].startswith(_INCLUDE):
        start += 1
    out: list[str] = []
    for line in lines[start:]:
        if line.lstrip().startswith(_INCLUDE):  # indented inside a block too
            out.append(load(line.lstrip()[len(_INCLUDE) :].strip()))
        else:
            out.append(line)
    return "".join(out)


FETCH = load("fetch")
ACK = load("ack")
RESTORE = load("restore")
RENEW = load("renew")
RECOVER = load("recover")
ADOPT = load("adopt")
