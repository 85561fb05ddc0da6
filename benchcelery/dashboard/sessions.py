"""Server-side dashboard sessions and the security headers of every response (an ASGI middleware).

The cookie holds only a random session id signed with a key derived from the bench's current
``dashboard_secret``; the session itself (user, read-only, CSRF token, flash message) is a JSON
string in Redis (keys.py ``dashboard_session``) that expires with the login. Every request re-reads
the secret: a session is honoured only while the secret it was created under is still the bench's,
so rotating or removing ``dashboard_secret`` ends every session at once, whether the dashboard was
running at the time or not. Logging out deletes the session from Redis, so a saved cookie is dead.

The cookie is ``HttpOnly``, ``SameSite=Strict`` and ``Secure`` when the request came over TLS: the
ASGI scheme says so, or ``X-Forwarded-Proto: https`` from an address in ``dashboard_trusted_proxies``
(from anyone else the header is ignored).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from http.cookies import SimpleCookie
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders

from benchcelery.dashboard import auth
from benchcelery.runtime import Runtime

COOKIE = "bench_dashboard"
_SESSION_KEY_INFO = b"benchcelery.dashboard.session"
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def fingerprint(secret: str) -> str:
    """Names the secret a session was made under without storing the secret in Redis."""
    return hmac.new(secret.encode(), b"benchcelery.dashboard.fingerprint", hashlib.sha256).hexdigest()[:32]


def _sign(secret: str, session_id: str) -> str:
    key = hmac.new(secret.encode(), _SESSION_KEY_INFO, hashlib.sha256).digest()
    return hmac.new(key, session_id.encode(), hashlib.sha256).hexdigest()


def cookie_value(secret: str, session_id: str) -> str:
    return f"{session_id}.{_sign(secret, session_id)}"


def session_id_of(secret: str, value: str) -> str | None:
    """The session id a cookie names if its signature is the current secret's, else None."""
    sid, _, sig = value.partition(".")
    if not sid or not sig or len(sid) > 64:
        return None
    return sid if hmac.compare_digest(sig, _sign(secret, sid)) else None


def _cookies(scope: Scope) -> dict[str, str]:
    for name, value in scope.get("headers") or []:
        if name == b"cookie":
            jar: SimpleCookie = SimpleCookie()
            try:
                jar.load(value.decode("latin-1"))
            except Exception:  # a malformed Cookie header is no session
                return {}
            return {k: m.value for k, m in jar.items()}
    return {}


def behind_tls(scope: Scope, trusted: set[str]) -> bool:
    """Whether the browser talks to us over TLS: directly, or through a trusted proxy that says so."""
    if scope.get("scheme") == "https":
        return True
    client = scope.get("client") or ("", 0)
    if client[0] not in trusted:
        return False
    for name, value in scope.get("headers") or []:
        if name == b"x-forwarded-proto":
            return bool(value.decode("latin-1").split(",")[0].strip().lower() == "https")
    return False


class SessionMiddleware:
    """Loads the request's session from Redis into ``scope["session"]`` and writes it back (or
    deletes it) with the response; puts the current secret in ``scope["bench.secret"]``."""

    def __init__(self, app: ASGIApp, rt: Runtime, max_age: int, trusted_proxies: list[str]) -> None:
        self.app = app
        self.rt = rt
        self.max_age = max_age
        self.trusted = set(trusted_proxies)

    def _load(self, secret: str | None, cookie: str | None) -> tuple[str | None, dict[str, Any]]:
        if not secret or not cookie:
            return None, {}
        sid = session_id_of(secret, cookie)
        if sid is None:
            return None, {}
        raw = self.rt.redis.get(self.rt.keys.dashboard_session(sid))
        try:
            data = json.loads(raw) if raw else {}
        except ValueError:
            data = {}
        if not isinstance(data, dict) or data.pop("_fp", None) != fingerprint(secret):
            return None, {}  # made under another secret: revoked
        return sid, data

    def _save(self, secret: str | None, sid: str | None, old: dict[str, Any], new: dict[str, Any]) -> Any:
        """Write the session; returns the cookie value to set ('' to clear it, None to leave it)."""
        r, keys = self.rt.redis, self.rt.keys
        if not new or not secret:
            if sid:
                r.delete(keys.dashboard_session(sid))
            return "" if sid else None
        body = json.dumps({**new, "_fp": fingerprint(secret)})
        if sid is None or new.get("user") != old.get("user"):  # a login gets a fresh id (no fixation)
            if sid:
                r.delete(keys.dashboard_session(sid))
            sid = secrets.token_urlsafe(24)
            r.set(keys.dashboard_session(sid), body, ex=self.max_age)
            return cookie_value(secret, sid)
        r.set(keys.dashboard_session(sid), body, keepttl=True)
        return None

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        secret = await run_in_threadpool(auth.bench_secret, self.rt.bench)
        scope["bench.secret"] = secret
        sid, old = await run_in_threadpool(self._load, secret, _cookies(scope).get(COOKIE))
        scope["session"] = dict(old)
        secure = behind_tls(scope, self.trusted)

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, header in SECURITY_HEADERS.items():
                    headers.setdefault(name, header)
                new = dict(scope["session"])
                if new != old:
                    cookie = await run_in_threadpool(self._save, secret, sid, old, new)
                    if cookie is not None:
                        headers.append("Set-Cookie", self._cookie(cookie, secure))
            await send(message)

        await self.app(scope, receive, send_wrapper)

    def _cookie(self, value: str, secure: bool) -> str:
        age = self.max_age if value else 0
        parts = [f"{COOKIE}={value}", "Path=/", f"Max-Age={age}", "HttpOnly", "SameSite=Strict"]
        if secure:
            parts.append("Secure")
        return "; ".join(parts)
