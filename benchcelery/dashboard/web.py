"""What every dashboard handler shares: the session's user, read-only mode, page rendering, and
the two guards: ``page`` (login required; BenchError and an unreachable Redis become an error page)
and ``action`` (login, CSRF token, not read-only; BenchError becomes a flash message).

Redirect targets (``next``) are same-origin paths only: one leading ``/`` followed by anything but
``/`` or ``\\``, no scheme, no backslash and no control character anywhere (browsers read ``///x``,
``/\\x`` and ``/\tx`` as another host)."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

import redis
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.templating import Jinja2Templates

from benchcelery.dashboard import auth
from benchcelery.errors import BenchError, ValidationError
from benchcelery.runtime import Runtime

Handler = Callable[[Request], Awaitable[Response]]
ActionHandler = Callable[[Request, Any, str], Awaitable[Response]]
_SAFE_PATH = re.compile(r"^/(?![/\\])[^\\\x00-\x20\x7f]*$")
MAX_PAGE = 1_000_000


def safe_next(target: object) -> str:
    """``target`` if it is a path of this site, else ``/``."""
    text = str(target or "")
    return text if len(text) <= 2000 and _SAFE_PATH.match(text) else "/"


def int_param(params: Any, name: str, default: int = 1, low: int = 1, high: int = MAX_PAGE) -> int:
    """A whole-number query parameter; anything else is a ValidationError (the page answers 400)."""
    raw = params.get(name)
    if raw in (None, ""):
        return default
    text = str(raw)
    if not text.isdigit() or len(text) > 9 or not low <= int(text) <= high:
        raise ValidationError(f"{name} must be a whole number from {low} to {high}")
    return int(text)


class Web:
    """The dashboard's shared state (runtime, templates, login secret) and request helpers."""

    def __init__(self, rt: Runtime, templates: Jinja2Templates, max_age: int, read_only: bool) -> None:
        self.rt = rt
        self.templates = templates
        self.max_age = max_age
        self.all_read_only = read_only

    def secret(self, request: Request) -> str | None:
        """The bench's dashboard secret as read for this request (sessions.py)."""
        value = request.scope.get("bench.secret")
        return str(value) if value else None

    def user_of(self, request: Request) -> str | None:
        return request.session.get("user")

    def read_only(self, request: Request) -> bool:
        return self.all_read_only or bool(request.session.get("read_only"))

    def render(self, request: Request, name: str, status: int = 200, **ctx: Any) -> Response:
        flash = request.session.pop("flash", None)
        return self.templates.TemplateResponse(
            request,
            name,
            {
                "user": self.user_of(request),
                "read_only": self.read_only(request),
                "csrf": request.session.get("csrf", ""),
                "flash": flash,
                "path": request.url.path,
                **ctx,
            },
            status_code=status,
        )

    def back(self, request: Request, form: Any, message: str | None = None) -> Response:
        """Redirect to the form's ``next`` page (only our own pages), with an optional flash message."""
        if message:
            request.session["flash"] = message
        return RedirectResponse(safe_next(form.get("next")), status_code=303)

    def page(self, fn: Handler) -> Handler:
        """A GET page: login required; expected errors render the error page."""

        async def wrapped(request: Request) -> Response:
            if not self.user_of(request):
                return RedirectResponse(f"/login?{urlencode({'next': request.url.path})}", status_code=303)
            try:
                return await fn(request)
            except BenchError as exc:
                return self.render(request, "error.html", status=400, message=str(exc))
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                return self.render(request, "error.html", status=503, message=f"Redis is unreachable: {exc}")

        return wrapped

    def action(self, fn: ActionHandler) -> Handler:
        """A POST action: login, the session's CSRF token and write access required; ``fn`` gets
        the form and the user; a BenchError goes back with the error as flash message."""

        async def wrapped(request: Request) -> Response:
            user = self.user_of(request)
            if not user:
                return PlainTextResponse("login required", status_code=401)
            form = await request.form()
            if not auth.csrf_ok(request.session.get("csrf"), form.get("csrf")):
                return PlainTextResponse("CSRF token missing or wrong: reload the page", status_code=403)
            if self.read_only(request):
                return PlainTextResponse("read-only: actions are disabled", status_code=403)
            try:
                return await fn(request, form, user)
            except BenchError as exc:
                request.session["flash"] = f"error: {exc}"
                return self.back(request, form)

        return wrapped
