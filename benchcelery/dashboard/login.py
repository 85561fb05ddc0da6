"""The dashboard's login, logout and health endpoints (no session needed to reach them)."""

from __future__ import annotations

import logging

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from benchcelery.dashboard import auth
from benchcelery.dashboard.actions import log_text
from benchcelery.dashboard.web import Web, safe_next

logger = logging.getLogger("benchcelery.dashboard")


class LoginViews:
    def __init__(self, web: Web) -> None:
        self.web = web
        self._healthy: bool | None = None  # the last probe's answer (None: none yet)

    async def login_page(self, request: Request) -> Response:
        return self.web.render(request, "login.html", next=safe_next(request.query_params.get("next", "/")), error=None)

    async def login(self, request: Request) -> Response:
        """Check the pasted login token; on success start a fresh session with a new CSRF token."""
        web = self.web
        form = await request.form()
        nxt = safe_next(form.get("next"))
        secret = web.secret(request)
        try:
            if not secret:
                raise auth.InvalidToken("the bench has no dashboard login (dashboard_secret is not set)")
            user, ro = auth.verify_token(secret, str(form.get("token") or ""), web.max_age)
        except auth.InvalidToken as exc:
            logger.warning("login refused: %s", log_text(exc))
            return web.render(request, "login.html", status=401, next=nxt, error=f"Login refused: {exc}")
        request.session.clear()
        request.session.update({"user": user, "read_only": ro, "csrf": auth.new_csrf()})
        logger.info("user=%s logged in%s", log_text(user), " (read-only)" if ro else "")
        return web.back(request, {"next": nxt})

    async def logout(self, request: Request) -> Response:
        """End the session: it is deleted from Redis, so a saved copy of the cookie is dead too."""
        form = await request.form()
        if auth.csrf_ok(request.session.get("csrf"), form.get("csrf")):
            request.session.clear()
        return RedirectResponse("/login", status_code=303)

    async def health(self, _request: Request) -> Response:
        """``{"ok": true}`` (200) while Redis answers, else ``{"ok": false, "error": ...}`` (503);
        one log line when the state changes, not one per probe."""
        try:
            ok, error = await run_in_threadpool(lambda: bool(self.web.rt.redis.ping())), None
        except Exception as exc:  # any failure to reach Redis is "not healthy", never a 500
            ok, error = False, self._unreachable(exc)
        if ok != self._healthy:
            was, self._healthy = self._healthy, ok
            if not ok:
                logger.warning("health: Redis unreachable: %s", error)
            elif was is not None:
                logger.warning("health: Redis reachable again")
        if ok:
            return JSONResponse({"ok": True})
        return JSONResponse({"ok": False, "redis": "unreachable", "error": error}, status_code=503)

    def _unreachable(self, exc: Exception) -> str:
        from benchcelery.bench.redis_url import mask_url
        from benchcelery.errors import BenchError
        from benchcelery.store.connection import describe

        if isinstance(exc, BenchError):
            return str(exc)
        return f"Redis at {mask_url(self.web.rt.settings.redis_url)} is unreachable: {describe(exc)}"
