"""Flower for a bench, never with its unauthenticated API, and answering only its own address.

Login: ``flower_basic_auth`` from the config, else a login generated on first use (user ``flower``,
a random password) kept in ``config/flower_basic_auth`` (mode 0600) and printed once, when made.
``FLOWER_UNAUTHENTICATED_API`` is never set, so Flower's API and pages always ask for it; with a
login set, Flower itself refuses cross-site POSTs (``Sec-Fetch-Site`` / ``Origin``).

Host check (DNS rebinding): ``bench flower`` runs Flower through ``main`` here, which refuses
(421) any request whose ``Host`` header is not the bound address (``localhost`` too on loopback),
a name in ``flower_allowed_hosts``, with the bound port. Bound to a wildcard address (``0.0.0.0``)
without ``flower_allowed_hosts``, every Host is accepted (the login still applies).
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path
from typing import Any

from benchcelery.bench.layout import Bench

AUTH_FILE = "flower_basic_auth"  # under the bench's config/ directory
HOSTS_ENV = "BENCH_FLOWER_HOSTS"  # comma-separated host:port values the guard accepts ("*" = any)
WILDCARDS = ("0.0.0.0", "::", "")


def auth_file(bench: Bench) -> Path:
    return bench.config_path / AUTH_FILE


def generated_login(bench: Bench) -> tuple[str, bool]:
    """(``user:password``, whether it was made now) of the bench's generated Flower login."""
    path = auth_file(bench)
    if path.exists():
        return path.read_text().strip(), False
    path.parent.mkdir(parents=True, exist_ok=True)
    login = f"flower:{secrets.token_urlsafe(18)}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(login + "\n")
    return login, True


def allowed_hosts(address: str, port: int, extra: list[str]) -> list[str]:
    """The ``Host`` header values Flower answers: ``["*"]`` for a wildcard bind without a list."""
    if address in WILDCARDS and not extra:
        return ["*"]
    names = {address, *extra}
    if address in ("127.0.0.1", "::1", "localhost"):
        names |= {"127.0.0.1", "localhost", "[::1]"}
    if ":" in address and not address.startswith("["):
        names.add(f"[{address}]")
    return sorted(f"{n}:{port}" for n in names) + sorted(n for n in names if port == 80)


def install_guard(hosts: list[str]) -> None:
    """Make Flower's tornado application refuse requests for another host (421)."""
    import tornado.web
    from flower.app import Flower

    if "*" in hosts:
        return
    wanted = {h.lower() for h in hosts}
    find_handler = Flower.find_handler

    def guarded(self: Any, request: Any, **kwargs: Any) -> Any:
        if (request.headers.get("Host") or "").lower() not in wanted:
            return self.get_handler_delegate(request, tornado.web.ErrorHandler, {"status_code": 421})
        return find_handler(self, request, **kwargs)

    Flower.find_handler = guarded  # type: ignore[method-assign]


def install_queue_lengths(pending_key: Any) -> None:
    """Flower's queue lengths from the bench's counters. Flower counts kombu's own lists (LLEN of
    a queue's name and priority suffixes); a bench keeps each site's jobs in lists of their own
    (sites take turns, fetch.lua) and counts them per site in ``pending:<queue>``. A queue's
    length is that count plus whatever still waits in kombu's lists (pushed by another tool, not
    yet moved to its site's list)."""
    from flower.utils.broker import RedisBase

    kombu_lengths = RedisBase.queues

    async def queues(self: Any, names: Any) -> list[dict[str, Any]]:
        names = list(names)
        async with self.redis.pipeline() as pipeline:
            for name in names:
                pipeline.hvals(pending_key(name))
            counts = await pipeline.execute()
        listed = await kombu_lengths(self, names)  # closes the client, as Flower expects
        return [
            {"name": row["name"], "messages": row["messages"] + sum(max(0, int(v)) for v in vals)}
            for row, vals in zip(listed, counts, strict=True)
        ]

    RedisBase.queues = queues  # type: ignore[method-assign]


def main() -> None:
    """``python -m benchcelery.diagnostics.flower -A benchcelery.app flower ...``: Celery's command
    line with the Host guard installed first."""
    from celery.__main__ import main as celery_main

    install_guard([h for h in os.environ.get(HOSTS_ENV, "").split(",") if h])
    from benchcelery.runtime import get_runtime

    install_queue_lengths(get_runtime().keys.pending_counts)
    sys.argv = ["celery", *sys.argv[1:]]
    celery_main()


if __name__ == "__main__":
    main()
