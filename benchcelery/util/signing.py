"""Signed, timestamped tokens: the dashboard's login tokens (``dashboard/auth.py``) and the
realtime relay's tokens (``realtime/tokens.py``).

A token is a JSON object signed with itsdangerous' ``URLSafeTimedSerializer`` under a salt of the
caller's (so a token of one kind is never accepted as the other). The secrets are kept in config
files (``bench.layout.ensure_secret`` generates them).
"""

from __future__ import annotations

from typing import Any


class BadToken(Exception):
    """The token is forged, expired or unreadable; the message says which (``invalid token (...)``)."""


def _serializer(secret: str, salt: str) -> Any:
    from itsdangerous import URLSafeTimedSerializer  # lazy: only the commands that sign need it

    return URLSafeTimedSerializer(secret, salt=salt)


def sign(secret: str, salt: str, payload: dict[str, Any]) -> str:
    """``payload`` as a signed, timestamped token."""
    return str(_serializer(secret, salt).dumps(payload))


def unsign(secret: str, salt: str, token: str, max_age: int) -> Any:
    """The payload of a token signed with ``secret`` and ``salt`` at most ``max_age`` seconds ago;
    BadToken otherwise."""
    from itsdangerous import BadData

    try:
        return _serializer(secret, salt).loads(token, max_age=max_age)
    except BadData as exc:
        raise BadToken(f"invalid token ({type(exc).__name__})") from None
