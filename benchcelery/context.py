"""The site context a job runs in: ``benchcelery.local.site``, ``.conf``, ``.user``, ``.job``.

Set per job by the worker (and by ``init()`` in scripts), so one worker serves every site.
"""

from __future__ import annotations

import threading
from typing import Any


class Local(threading.local):
    site: str | None = None
    conf: dict[str, Any] = {}
    user: str | None = None
    job: dict[str, Any] | None = None
    bench_path: str | None = None

    def reset(self) -> None:
        self.site = None
        self.conf = {}
        self.user = None
        self.job = None


local = Local()
