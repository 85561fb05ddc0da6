"""`bench worker` whose main process dies on one message (test_security.py): CRASH_ON names the
job id; CRASH_MODE=raise fails Celery's request handling with an exception (Celery's
"Unrecoverable error"), CRASH_MODE=exit ends the process at once (as a segfault would)."""

from __future__ import annotations

import os
import sys
from typing import Any

from celery.worker import request as celery_request

TARGET = os.environ["CRASH_ON"]
MODE = os.environ.get("CRASH_MODE", "raise")
_original = celery_request.Request.__init__


def _init(self: Any, message: Any, *args: Any, **kwargs: Any) -> None:
    headers = kwargs.get("headers") or message.headers or {}
    if headers.get("id") == TARGET:
        if MODE == "exit":
            os._exit(70)
        raise RuntimeError(f"crashing on {TARGET} on purpose")
    _original(self, message, *args, **kwargs)


celery_request.Request.__init__ = _init  # type: ignore[method-assign]

if __name__ == "__main__":
    from benchcelery.cli import main

    sys.argv = ["bench", "worker", *sys.argv[1:]]
    main()
