"""The Lua of the delivery scripts (delivery.py), read from ``lua/<name>.lua`` once at import.

Each file opens with a header of ``--`` comment lines (what the script does, its KEYS and ARGV, the
keys it touches); the header is documentation and is not sent to Redis. A line
``--#include <name>`` is replaced by the body of ``lua/<name>.lua`` (snippets shared by several
scripts are named ``_<name>``). The body is sent exactly as written, blank lines included.

A script whose file starts with a ``#!lua`` line (Redis 7 script flags) is sent with that line
first. The flags decide what Redis does when it is out of memory (``maxmemory`` reached under
``noeviction``): a script without flags is refused only at its first command that may grow memory,
after the reads and deletes before it ran, so such a script would be cut in half; ``#!lua`` alone
refuses the whole script before it runs (fetch, recover, adopt, promote: they take or move jobs), and
``#!lua flags=allow-oom`` always runs it (renew, ack, restore: they keep or free memory, and
refusing them would put live jobs back or keep finished ones in flight).
"""

from __future__ import annotations

from importlib.resources import files

_INCLUDE = "--#include "


def load(name: str) -> str:
    """The script ``lua/<name>.lua`` as Redis runs it: header dropped, includes expanded."""
    text = (files(__package__) / "lua" / f"{name}.lua").read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    shebang = lines.pop(0) if lines and lines[0].startswith("#!lua") else ""
    start = 0
    while start < len(lines) and lines[start].startswith("--") and not lines[start].startswith(_INCLUDE):
        start += 1
    out: list[str] = []
    for line in lines[start:]:
        if line.lstrip().startswith(_INCLUDE):  # indented inside a block too
            out.append(load(line.lstrip()[len(_INCLUDE) :].strip()))
        else:
            out.append(line)
    return shebang + "".join(out)


FETCH = load("fetch")
ACK = load("ack")
RESTORE = load("restore")
RENEW = load("renew")
RECOVER = load("recover")
# Messages pushed on kombu's one-list layout move to their sites' lists (delivery.py).
ADOPT = load("adopt")
# Jobs that run later and retries (delayed.py).
PROMOTE = load("promote")
ACK_RETRY = load("ack_retry")
DELAY = load("delay")
UNSCHEDULE = load("unschedule")
