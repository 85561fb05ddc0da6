"""Redis Sentinel: the queue Redis as a master with replicas, watched by sentinels that promote a
replica when the master is lost. Every client the bench builds asks the sentinels for the current
master (``connection.make_client`` / ``make_async_client`` come here), so workers, the scheduler,
enqueue, read commands, ``doctor`` and the realtime relay follow a failover without a restart.

Configuration (``sites/common_site_config.json``)::

    "redis_queue": "sentinel://h1:26379,h2:26379,h3:26379/mymaster/0",
    "sentinel_password": "...",        # optional: sentinels started with requirepass
    "sentinel_username": "...",        # optional: an ACL user on the sentinels
    "redis_password": "...",           # optional: the master/replicas' default user (no ACL user)

The URL names the sentinels (port 26379 when left out), the monitored service and the database.
Passwords never go in the URL. With ``use_rq_auth`` the bench's ACL user (``rq_username`` /
``rq_password``) is used on the data nodes, as with a plain Redis. Frappe's keys
(``redis_queue_sentinel_enabled``, ``redis_queue_sentinels``, ``redis_queue_master_service``,
``redis_queue_sentinel_username/password``, ``redis_queue_master_username/password``) are read too.

Nothing here imports Celery or kombu (``sentinel_transport`` holds the kombu side).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

# The URL grammar is bench/redis_url.py's (config validation needs it without clients).
from benchcelery.bench.redis_url import SCHEME, bracket_host, is_sentinel_url, parse_url
from benchcelery.errors import ValidationError

if TYPE_CHECKING:
    import redis

    from benchcelery.bench.config import Settings

# Sentinels answer at once or not at all: a dead one must not hold up the search for the master.
SENTINEL_SOCKET_TIMEOUT = 1.0


@dataclass(frozen=True)
class SentinelSpec:
    nodes: tuple[tuple[str, int], ...]  # (host, port) of each sentinel
    service: str  # the master's name in `sentinel monitor`
    db: int = 0
    sentinel_username: str | None = None
    sentinel_password: str | None = field(default=None, repr=False)

    @property
    def display(self) -> str:
        hosts = ",".join(f"{bracket_host(h)}:{p}" for h, p in self.nodes)
        return f"{SCHEME}://{hosts}/{self.service}/{self.db}"


def spec(settings: Settings) -> SentinelSpec | None:
    """The Sentinel set-up of a bench, or None when ``redis_queue`` is a plain Redis."""
    if not is_sentinel_url(settings.redis_url):
        return None
    nodes, service, db = parse_url(settings.redis_url)
    return SentinelSpec(nodes, service, db, *_sentinel_credentials(settings.conf))


def _sentinel_credentials(conf: dict[str, Any]) -> tuple[str | None, str | None]:
    return (
        conf.get("sentinel_username") or conf.get("redis_queue_sentinel_username") or None,
        conf.get("sentinel_password") or conf.get("redis_queue_sentinel_password") or None,
    )


def master_credentials(settings: Settings) -> tuple[str | None, str | None]:
    """(username, password) on the master and replicas: the bench's ACL user when set, else the
    ``redis_password`` (Frappe: ``redis_queue_master_username/password``) of the default user."""
    if settings.username or settings.password:
        return settings.username, settings.password
    conf = settings.conf
    username = conf.get("redis_username") or conf.get("redis_queue_master_username") or None
    password = conf.get("redis_password") or conf.get("redis_queue_master_password") or None
    return username, password


def sentinel_kwargs(s: SentinelSpec, connect_timeout: float = SENTINEL_SOCKET_TIMEOUT) -> dict[str, Any]:
    """Connection options of the sentinels themselves (not of the master). No retries: a sentinel that
    does not answer is skipped for the next one at once (redis-py would back off 1 + 2 + 4 s on each)."""
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    options: dict[str, Any] = {
        "socket_timeout": SENTINEL_SOCKET_TIMEOUT,
        "socket_connect_timeout": connect_timeout,
        "retry": Retry(NoBackoff(), 0),
    }
    if s.sentinel_username:
        options["username"] = s.sentinel_username
    if s.sentinel_password:
        options["password"] = s.sentinel_password
    return options


def master_client(settings: Settings, **options: Any) -> redis.Redis:
    """A redis-py client that always talks to the current master (re-asked of the sentinels on
    every new connection, so a failover is followed without building a new client)."""
    username, password = master_credentials(settings)
    return client_for(settings.redis_url, settings, username=username, password=password, **options)


def client_for(url: str, settings: Settings, redis_class: Any = None, **options: Any) -> Any:
    """A client of the master named by ``url`` (``redis_queue`` or ``redis_cache``), with the
    sentinel credentials of ``settings``; ``options`` go to the master's connections."""
    import redis as redis_py
    from redis.sentinel import Sentinel

    nodes, service, db = parse_url(url)
    s = SentinelSpec(nodes, service, db, *_sentinel_credentials(settings.conf))
    sentinel = Sentinel(list(s.nodes), sentinel_kwargs=sentinel_kwargs(s))
    return sentinel.master_for(s.service, redis_class=redis_class or redis_py.Redis, db=s.db, **options)


def async_master_client(settings: Settings, **options: Any) -> Any:
    """The asyncio flavour of ``master_client`` (the realtime relay)."""
    from redis.asyncio.sentinel import Sentinel

    s = _require(settings)
    username, password = master_credentials(settings)
    sentinel = Sentinel(list(s.nodes), sentinel_kwargs=sentinel_kwargs(s))
    return sentinel.master_for(s.service, db=s.db, username=username, password=password, **options)


def _require(settings: Settings) -> SentinelSpec:
    s = spec(settings)
    if s is None:
        raise ValidationError(f"redis_queue is not a sentinel:// URL: {settings.display_url}")
    return s


# --- Celery/kombu and RedBeat ---
def kombu_url(settings: Settings) -> str:
    """kombu's form: ``sentinel://[user:pass@]h1:p1/db;sentinel://h2:p2/db`` (credentials = the master's)."""
    s = _require(settings)
    username, password = master_credentials(settings)
    userinfo = ""
    if username or password:
        userinfo = quote(username or "", safe="") + (":" + quote(password, safe="") if password else "") + "@"
    return ";".join(f"{SCHEME}://{userinfo}{bracket_host(h)}:{p}/{s.db}" for h, p in s.nodes)


def kombu_transport_options(settings: Settings) -> dict[str, Any]:
    s = _require(settings)
    return {"master_name": s.service, "sentinel_kwargs": sentinel_kwargs(s)}


def redbeat_url(settings: Settings) -> str:
    s = _require(settings)
    host, port = s.nodes[0]
    return f"redis-sentinel://{bracket_host(host)}:{port}/{s.db}"


def redbeat_options(settings: Settings) -> dict[str, Any]:
    """``redbeat_redis_options`` for a Sentinel set-up (RedBeat builds its own Sentinel client)."""
    s = spec(settings)
    if s is None:
        return {}
    username, password = master_credentials(settings)
    options: dict[str, Any] = {
        "sentinels": list(s.nodes),
        "service_name": s.service,
        "db": s.db,
        "sentinel_kwargs": sentinel_kwargs(s),
        "socket_timeout": 10,
    }
    if password:
        options["password"] = password
    if username:
        options["username"] = username
    return options
