"""Signed, timestamped tokens and the random secrets that sign them: the dashboard's login tokens
(``dashboard/auth.py``) and the realtime relay's tokens (``realtime/tokens.py``).

A token is a JSON object signed with itsdangerous' ``URLSafeTimedSerializer`` under a salt of the
caller's (so a token of one kind is never accepted as the other). A secret is generated once into
a config file, under that file's lock, and read from the config afterwards.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from benchcelery.bench.layout import locked_json

SECRET_BYTES = 32


class BadToken(Exception):
    """The token is forged, expired or unreadable; the message says which (``invalid token (...)``)."""


def ensure_secret(path: Path, key: str) -> str:
    """The secret at ``key`` of the JSON file ``path``, generated there when missing. Re-read under
    the file's lock, so concurrent callers agree on one secret."""
    with locked_json(path) as data:
        if not data.get(key):
            data[key] = secrets.token_urlsafe(SECRET_BYTES)
        return str(data[key])


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
