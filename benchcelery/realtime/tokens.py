"""Realtime tokens: how a socket.io client proves which user of which site it is.

A token is ``{"site", "user"}`` signed (itsdangerous, timestamped) with the site's secret,
``realtime_secret`` in ``site_config.json`` (generated there on first use). The relay checks the
signature, that the token names the site whose namespace the client connects to, and its age.
"""

from __future__ import annotations

from dataclasses import dataclass

from benchcelery.bench.config import DEFAULTS
from benchcelery.bench.layout import Bench, ensure_secret
from benchcelery.errors import BenchError, ValidationError
from benchcelery.util import signing

SECRET_KEY = "realtime_secret"  # site_config.json key
MAX_AGE_KEY = "realtime_token_max_age"  # config key: seconds a token stays valid
_SALT = "benchcelery.realtime.token"


class InvalidToken(BenchError):
    """The token is missing, forged, expired or for another site."""


@dataclass(frozen=True)
class Token:
    site: str
    user: str
    token: str
    max_age: int  # seconds


def site_secret(bench: Bench, site: str, create: bool = True) -> str | None:
    """The site's realtime secret; generated into site_config.json when missing (if ``create``)."""
    secret = bench.site_config(site).get(SECRET_KEY)
    if secret or not create:
        return str(secret) if secret else None
    bench.require_site(site)
    return ensure_secret(bench.site_config_file(site), SECRET_KEY)


def max_age(bench: Bench, site: str) -> int:
    value = bench.merged_config(site).get(MAX_AGE_KEY, DEFAULTS[MAX_AGE_KEY])
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValidationError(f"Config key {MAX_AGE_KEY} must be a number of seconds") from None


def make_token(bench: Bench, site: str, user: str) -> Token:
    """A token for ``user`` of ``site`` (creates the site's secret if needed)."""
    if not user or not user.strip():
        raise ValidationError("A realtime token needs a user")
    secret = site_secret(bench, site)
    assert secret
    token = signing.sign(secret, _SALT, {"site": site, "user": user})
    return Token(site=site, user=user, token=token, max_age=max_age(bench, site))


def verify_token(bench: Bench, site: str, token: object) -> str:
    """The user a token names; raises InvalidToken. Never creates a secret."""
    if not isinstance(token, str) or not token:
        raise InvalidToken("missing token")
    secret = site_secret(bench, site, create=False)
    if not secret:
        raise InvalidToken(f"site {site} has no realtime secret yet")
    try:
        data = signing.unsign(secret, _SALT, token, max_age(bench, site))
    except signing.BadToken as exc:
        raise InvalidToken(str(exc)) from None
    if not isinstance(data, dict) or data.get("site") != site or not data.get("user"):
        raise InvalidToken("token is for another site")
    return str(data["user"])
