"""The host name a process presents (worker names, heartbeats, the scheduler's heartbeat).

Workers on several machines are told apart by it: ``<queues>.<id>@<host>``. It is the machine's
name unless ``$BENCH_HOSTNAME`` or config ``worker_hostname`` says otherwise (containers that all
call themselves ``localhost``, or several copies of a bench on one machine).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from typing import Any

HOSTNAME_ENV = "BENCH_HOSTNAME"


def host_name(conf: Mapping[str, Any] | None = None) -> str:
    return os.environ.get(HOSTNAME_ENV) or str((conf or {}).get("worker_hostname") or "") or socket.gethostname()
