"""The site context a job runs in: ``benchcelery.local.site``, ``.conf``, ``.user``, ``.job``, ``.flags``.

Set per job by the worker (and by ``init()`` in scripts), so one worker serves every site.
"""

from __future__ import annotations

import threading
from typing import Any


class AttrDict(dict[str, Any]):
    """A dict whose keys read as attributes, a missing one as None (Frappe's ``frappe._dict``)."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return self.get(name)

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __delattr__(self, name: str) -> None:
        self.pop(name, None)


class Local(threading.local):
    site: str | None = None
    conf: dict[str, Any] = {}
    user: str | None = None
    job: dict[str, Any] | None = None
    bench_path: str | None = None

    def __init__(self) -> None:
        self.flags = AttrDict()  # Frappe's frappe.flags: per job (and per thread)

    def reset(self) -> None:
        self.site = None
        self.conf = {}
        self.user = None
        self.job = None
        self.flags = AttrDict()


local = Local()
