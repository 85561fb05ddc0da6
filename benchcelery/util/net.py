"""Checks before a server of ours (relay, dashboard, metrics) starts listening."""

from __future__ import annotations

import ipaddress
import socket

from benchcelery.errors import BenchError


def check_port_free(host: str, port: int) -> None:
    """Raise BenchError when ``host:port`` cannot be bound (one clear line instead of uvicorn's)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise BenchError(f"Cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def is_loopback(host: str) -> bool:
    """Whether ``host`` is ``localhost`` or a loopback address (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
