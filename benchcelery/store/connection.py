"""Redis connections: URL and credentials, a few quick retries, and one clear error line.

Nothing here prints; failures raise ``RedisUnavailableError`` (exit code 69) whose message names
the URL (password masked) and the cause.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from benchcelery.bench.config import Settings
from benchcelery.bench.redis_url import mask_url, query_credentials
from benchcelery.errors import RedisUnavailableError
from benchcelery.store import sentinel

if TYPE_CHECKING:
    import redis

RETRY_DELAYS = (0.1, 0.3, 0.6)  # quick retries for a Redis that is (re)starting
# With Sentinel, a command started during a failover waits for the promoted replica (8.5 s in all).
SENTINEL_RETRY_DELAYS = (0.5, 1.0, 1.0, 2.0, 2.0, 2.0)
CONNECT_TIMEOUT = 2.0
# A reply that does not come within this many seconds ends the call with a TimeoutError (and the
# connection is dropped): a path that drops packets but keeps the socket open (a NAT or load
# balancer that forgot the flow, a pulled cable) can then never hold a caller for good. Every
# command the bench sends answers in milliseconds; the longest waits are an idle worker's BRPOP
# (1 s) and an enqueue's WAIT (``enqueue_wait_timeout``, read with its own longer deadline).
SOCKET_TIMEOUT = 10.0
# TCP keepalive in seconds instead of the kernel's 2 hours: an idle connection whose peer is gone
# is found dead after KEEPIDLE + KEEPCNT * KEEPINTVL = 11 s.
KEEPIDLE, KEEPINTVL, KEEPCNT = 5, 2, 3


def keepalive_options() -> dict[int, int]:
    """``socket_keepalive_options`` for redis-py and kombu (the TCP_KEEP* options this OS has)."""
    import socket

    wanted = (("TCP_KEEPIDLE", KEEPIDLE), ("TCP_KEEPINTVL", KEEPINTVL), ("TCP_KEEPCNT", KEEPCNT))
    return {getattr(socket, name): value for name, value in wanted if hasattr(socket, name)}


def retry_policy() -> Any:
    """redis-py's retry for the bench's clients: a dropped connection is re-made at once (then after
    0.2 and 0.4 s); a timeout is not retried. redis-py's own default retries a timeout 10 times
    with backoff, so a command on a path that drops packets would hang for ~2 minutes instead of
    SOCKET_TIMEOUT seconds."""
    import redis
    from redis.backoff import ExponentialBackoff
    from redis.retry import Retry

    return Retry(ExponentialBackoff(cap=0.4, base=0.1), 3, supported_errors=(redis.ConnectionError,))


def socket_options() -> dict[str, Any]:
    """Read timeout, connect timeout and TCP keepalive of every Redis connection the bench makes."""
    return {
        "socket_timeout": SOCKET_TIMEOUT,
        "socket_connect_timeout": CONNECT_TIMEOUT,
        "socket_keepalive": True,
        "socket_keepalive_options": keepalive_options(),
    }


def broker_url(settings: Settings) -> str:
    """The redis:// URL with the ACL user and password embedded (for kombu); kombu's
    ``sentinel://...;sentinel://...`` form for a Sentinel set-up (sentinel.py). Credentials given
    as ``?username=&password=`` (which redis-py reads and kombu refuses) move into the userinfo."""
    if sentinel.is_sentinel_url(settings.redis_url):
        return sentinel.kombu_url(settings)
    q_user, q_password, query = query_credentials(settings.redis_url)
    if not (settings.username or settings.password or q_user or q_password):
        return settings.redis_url
    parts = urlsplit(settings.redis_url)
    # As redis-py: the bench's own credentials, else the URL's userinfo, else its query.
    username = settings.username or (unquote(parts.username) if parts.username else None) or q_user
    password = settings.password or (unquote(parts.password) if parts.password else None) or q_password
    host = parts.hostname or "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    userinfo = quote(username or "", safe="")
    if password:
        userinfo += ":" + quote(password, safe="")
    netloc = f"{userinfo}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def make_client(settings: Settings, **kwargs: object) -> redis.Redis:
    """A redis-py client for the bench's queue Redis (not yet connected); every client the bench
    builds comes from here (or ``make_async_client``). With Sentinel it follows the current master.
    Its connections have the read timeout and keepalive of ``socket_options``."""
    import redis

    options: dict[str, object] = {
        **socket_options(),
        "retry": retry_policy(),
        "health_check_interval": 25,
        **kwargs,
    }
    if sentinel.is_sentinel_url(settings.redis_url):
        return sentinel.master_client(settings, **options)
    if settings.username:
        options["username"] = settings.username
    if settings.password:
        options["password"] = settings.password
    return redis.Redis.from_url(settings.redis_url, **options)  # type: ignore[arg-type]


def make_async_client(settings: Settings, **kwargs: Any) -> Any:
    """A ``redis.asyncio`` client for the bench's queue Redis (the realtime relay), with the read
    timeout and keepalive of ``socket_options`` (a pub/sub read given its own timeout keeps it)."""
    kwargs = {**socket_options(), **kwargs}
    if sentinel.is_sentinel_url(settings.redis_url):
        return sentinel.async_master_client(settings, **kwargs)
    import redis.asyncio as aioredis

    return aioredis.Redis.from_url(settings.redis_url, username=settings.username, password=settings.password, **kwargs)


def connect(settings: Settings, **kwargs: object) -> redis.Redis:
    """A connected client; raises RedisUnavailableError after a few quick retries (longer with
    Sentinel, so a command started during a failover waits for the new master)."""
    client = make_client(settings, **kwargs)
    delays = SENTINEL_RETRY_DELAYS if sentinel.is_sentinel_url(settings.redis_url) else RETRY_DELAYS
    check(client, settings.redis_url, delays)
    return client


def check(client: redis.Redis, url: str, delays: tuple[float, ...] = RETRY_DELAYS) -> None:
    """PING with retries; translate redis-py's errors into one line naming URL and cause."""
    import redis

    last: Exception | None = None
    for delay in (*delays, None):
        try:
            client.ping()
            return
        except (redis.AuthenticationError, redis.exceptions.NoPermissionError) as exc:
            raise RedisUnavailableError(f"Redis at {mask_url(url)}: authentication failed ({exc})") from None
        except redis.ResponseError as exc:
            if "WRONGPASS" in str(exc) or "NOAUTH" in str(exc) or "NOPERM" in str(exc):
                raise RedisUnavailableError(f"Redis at {mask_url(url)}: authentication failed ({exc})") from None
            raise
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            last = exc
            if delay is not None:
                time.sleep(delay)
    raise RedisUnavailableError(f"Redis at {mask_url(url)} is unreachable: {describe(last)}")


def describe(exc: BaseException | None) -> str:
    """A short cause: 'connection refused', 'timeout', or redis-py's own words."""
    import redis

    text = str(exc or "unknown error")
    if text.startswith("No master found"):  # redis-py appends the repr of every sentinel client
        return text.split(" : ")[0] + " (sentinels unreachable, or they do not know that master)"
    if isinstance(exc, redis.TimeoutError) or "timed out" in text.lower():
        return "timeout"
    if "refused" in text.lower():
        return "connection refused"
    if "Name or service not known" in text or "nodename nor servname" in text:
        return "unknown host"
    return text.splitlines()[0] if text else type(exc).__name__
