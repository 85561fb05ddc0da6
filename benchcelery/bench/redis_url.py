"""The grammar of the bench's Redis URLs: ``redis://``, ``rediss://``, ``unix://`` and
``sentinel://h1[:p1],h2[:p2]/service[/db]``, and the one password masker for any URL.

Pure text: nothing here connects, and nothing imports beyond the standard library and
``benchcelery.errors`` (config validation needs it; ``store/sentinel.py`` builds the clients).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from benchcelery.errors import ValidationError

SCHEME = "sentinel"
HOST = re.compile(r"^[A-Za-z0-9._:-]{1,253}\Z")  # names and IP addresses; they go into config files
_NAME = re.compile(r"^[A-Za-z0-9._-]{1,128}\Z")
DEFAULT_PORT = 26379
DEFAULT_SERVICE = "mymaster"
INVALID = "<invalid URL>"


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
    """What is wrong with a sentinel:// URL, or None."""
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


def bracket_host(host: str) -> str:
    """``host`` as written in a URL (an IPv6 address in brackets)."""
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


def redis_url_problem(value: Any) -> str | None:
    """What is wrong with a ``redis_queue`` / ``redis_cache`` value, or None."""
    if not isinstance(value, str):
        return "must be a redis:// URL string"
    parts = urlsplit(value)
    if parts.scheme == SCHEME:
        return url_problem(value)
    if parts.scheme not in ("redis", "rediss", "unix"):
        return "must be a redis://, rediss://, unix:// or sentinel:// URL"
    try:
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        return "has a port that is not a number from 1 to 65535"
    path = parts.path.strip("/")
    if parts.scheme != "unix" and path and not (path.isdigit() and int(path) < 100000):
        return "must end with a database number (e.g. /0)"
    if parts.scheme != "unix" and not parts.hostname:
        return "must name a host"
    return None


# A query parameter that carries a secret: ``?password=``, ``?sentinel_password=`` (redis-py reads them).
_SECRET_PARAM = re.compile(r"(?i)((?:^|&)[^=&]*password[^=&]*=)[^&]*")


def mask_url(url: str) -> str:
    """``url`` with its password (in the userinfo or any ``?...password=`` parameter) replaced by
    ``***``, the rest as written; ``<invalid URL>`` when a password may be in it but the URL cannot
    be parsed. Passwords never reach output or logs."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return INVALID if ("@" in url or "password" in url.lower()) else url
    query = _SECRET_PARAM.sub(r"\1***", parts.query)
    if password is not None:
        netloc = f"{parts.username or ''}:***@{parts.netloc.rsplit('@', 1)[-1]}"
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    if query != parts.query:  # replaced in place: urlunsplit would rewrite unix:///path as unix:/path
        head, _, tail = url.partition("?")
        return head + "?" + tail.replace(parts.query, query, 1)
    return url


def query_credentials(url: str) -> tuple[str | None, str | None, str]:
    """``(username, password, query without them)`` from a URL's ``?username=&password=``
    parameters (redis-py's spelling; kombu refuses a password there)."""
    pairs = parse_qsl(urlsplit(url).query, keep_blank_values=True)
    found = {k: v for k, v in pairs if k in ("username", "password")}
    rest = urlencode([(k, v) for k, v in pairs if k not in ("username", "password")])
    return found.get("username") or None, found.get("password") or None, rest


# --- where a URL points ---------------------------------------------------------------------------
def next_db_url(url: str) -> str:
    """``url`` with the next database number (0 -> 1, ..., 15 -> 0)."""
    parts = urlsplit(url)
    db = (db_number(url) + 1) % 16
    if is_sentinel_url(url):
        return f"{parts.scheme}://{parts.netloc}/{parse_url(url)[1]}/{db}"
    if parts.scheme == "unix":
        query = "&".join([q for q in parts.query.split("&") if q and not q.startswith("db=")] + [f"db={db}"])
        return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, parts.fragment))


def same_server(a: str, b: str) -> bool:
    if is_sentinel_url(a) or is_sentinel_url(b):  # the same sentinels and master name
        return a.split("/")[:4] == b.split("/")[:4]
    pa, pb = urlsplit(a), urlsplit(b)
    if pa.scheme == "unix" or pb.scheme == "unix":
        return pa.path == pb.path
    local = {"localhost", "127.0.0.1", "::1"}
    ha, hb = pa.hostname or "localhost", pb.hostname or "localhost"
    return (ha == hb or {ha, hb} <= local) and (pa.port or 6379) == (pb.port or 6379)


def db_number(url: str) -> int:
    """The database number a URL selects (0 when it names none)."""
    if is_sentinel_url(url):
        return parse_url(url)[2]
    parts = urlsplit(url)
    if parts.scheme == "unix":
        found = [q[3:] for q in parts.query.split("&") if q.startswith("db=")]
        return int(found[0]) if found and found[0].isdigit() else 0
    path = parts.path.strip("/")
    return int(path) if path.isdigit() else 0
