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

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from benchcelery.errors import ValidationError

if TYPE_CHECKING:
    import redis

    from benchcelery.bench.config import Settings

SCHEME = "sentinel"
HOST = re.compile(r"^[A-Za-z0-9._:-]{1,253}\Z")  # names and IP addresses; they go into config files
_NAME = re.compile(r"^[A-Za-z0-9._-]{1,128}\Z")
DEFAULT_PORT = 26379
DEFAULT_SERVICE = "mymaster"
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
        hosts = ",".join(f"{_host(h)}:{p}" for h, p in self.nodes)
        return f"{SCHEME}://{hosts}/{self.service}/{self.db}"


def is_sentinel_url(url: str) -> bool:
    return url.split("://", 1)[0].lower() == SCHEME


def parse_url(url: str) -> tuple[tuple[tuple[str, int], ...], str, int]:
    """``sentinel://h1[:p1],h2[:p2]/service[/db]`` -> (nodes, service, db); ValidationError (saying
    what the URL must be, to follow "redis_queue <url>") if malformed."""
    parts = urlsplit(url)
    if parts.scheme.lower() != SCHEME:
        raise ValidationError("must be a sentinel:// URL")
    netloc = parts.netloc
    if "@" in netloc:
        raise ValidationError("must not hold passwords: put them in sentinel_password / redis_password")
    nodes: list[tuple[str, int]] = []
    for item in filter(None, (n.strip() for n in netloc.split(","))):
        host, port = _split_host_port(item)
        nodes.append((host, port))
    if not nodes:
        raise ValidationError("must name at least one sentinel (sentinel://host:26379,host2:26379/mymaster/0)")
    path = [p for p in parts.path.split("/") if p]
    service = path[0] if path else ""
    if not _NAME.match(service):
        raise ValidationError("must name the monitored master (sentinel://host:26379/mymaster/0)")
    db = 0
    if len(path) > 1:
        if not path[1].isdigit() or len(path) > 2 or parts.query or parts.fragment:
            raise ValidationError("must end with a database number after the master name (/mymaster/0)")
        db = int(path[1])
    return tuple(nodes), service, db


def url_problem(url: str) -> str | None:
    """What is wrong with a sentinel:// URL (config_schema's check), or None."""
    try:
        parse_url(url)
    except ValidationError as exc:
        return str(exc)
    return None


def _split_host_port(item: str) -> tuple[str, int]:
    if item.startswith("["):  # [ipv6]:port
        host, _, rest = item[1:].partition("]")
        port_text = rest.lstrip(":")
    elif item.count(":") == 1:
        host, port_text = item.split(":")
    else:
        host, port_text = item, ""
    if not HOST.match(host):
        raise ValidationError(f"has a sentinel address {item[:100]!r} without a valid host")
    if not port_text:
        return host, DEFAULT_PORT
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValidationError(f"has a sentinel address {item[:100]!r} with a bad port")
    return host, int(port_text)


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def frappe_url(conf: dict[str, Any]) -> str | None:
    """The sentinel:// URL described by Frappe's ``redis_queue_sentinel_*`` keys, or None."""
    if not conf.get("redis_queue_sentinel_enabled"):
        return None
    nodes = conf.get("redis_queue_sentinels") or []
    if isinstance(nodes, str):
        nodes = [n for n in nodes.split(",") if n.strip()]
    if not isinstance(nodes, list) or not nodes:
        raise ValidationError("redis_queue_sentinel_enabled needs redis_queue_sentinels (a list of host:port)")
    service = str(conf.get("redis_queue_master_service") or DEFAULT_SERVICE)
    return f"{SCHEME}://{','.join(str(n).strip() for n in nodes)}/{service}/0"


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
    return ";".join(f"{SCHEME}://{userinfo}{_host(h)}:{p}/{s.db}" for h, p in s.nodes)


def kombu_transport_options(settings: Settings) -> dict[str, Any]:
    s = _require(settings)
    return {"master_name": s.service, "sentinel_kwargs": sentinel_kwargs(s)}


def redbeat_url(settings: Settings) -> str:
    s = _require(settings)
    host, port = s.nodes[0]
    return f"redis-sentinel://{_host(host)}:{port}/{s.db}"


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
