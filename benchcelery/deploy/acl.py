"""Redis ACL of the bench's queue Redis (``bench create-rq-users``), Frappe's layout:

- ``default``: the admin (``nopass``, or a random password with ``--set-admin-password``);
- ``<bench_id>``: this bench's user, limited to its keys (``~bc:<bench_id>:*``) and channels, with
  every command except ``@admin``. Another bench's user cannot read or signal this bench.

Channels: ``&bc:<bench_id>:*`` covers PUBLISH/SUBSCRIBE; Redis only lets a PSUBSCRIBE through when
its pattern is literally granted, so kombu's control and event patterns (which workers and
monitors PSUBSCRIBE) are granted by name (``Keys.acl_channel_patterns``), as is ``events``, the
realtime channel (outside the prefix, Frappe's wire format).

Passwords are stored as SHA-256 (``#<hex>``) in the ACL file and in clear in
common_site_config.json (``rq_username``, ``rq_password``, ``use_rq_auth``), as Frappe does.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from urllib.parse import urlsplit

from benchcelery import sentinel
from benchcelery.config import Settings
from benchcelery.deploy.files import acl_path, render_redis, write_files
from benchcelery.keys import Keys

PASSWORD_BYTES = 15  # 20 characters of URL-safe base64, Frappe's length


@dataclass(frozen=True)
class RqUsers:
    username: str
    password: str
    admin_password: str | None
    acl_file: str
    sentinel: bool = False


def new_password() -> str:
    return secrets.token_urlsafe(PASSWORD_BYTES)


def _secret(password: str | None) -> str:
    return f"#{hashlib.sha256(password.encode()).hexdigest()}" if password else "nopass"


def admin_acl_line(password: str | None = None) -> str:
    return f"user default on {_secret(password)} ~* &* +@all"


def bench_acl_line(bench_id: str, password: str, db: int = 0) -> str:
    keys = Keys(bench_id)
    channels = [f"&{pattern}" for pattern in keys.acl_channel_patterns(db)]
    return " ".join(
        ["user", bench_id, "on", _secret(password), f"~{keys.acl_key_pattern}", *channels, "+@all", "-@admin"]
    )


def redis_db(url: str) -> int:
    path = urlsplit(url).path.strip("/")
    return int(path) if path.isdigit() else 0


def create_rq_users(settings: Settings, set_admin_password: bool = False, use_rq_auth: bool = False) -> RqUsers:
    """Write config/redis_queue.acl (and re-render redis_queue.conf so it loads it); store the
    bench user's credentials in common_site_config.json. Redis must be restarted to apply them."""
    bench = settings.bench
    username, password = settings.bench_id, new_password()
    admin_password = new_password() if set_admin_password else None
    path = acl_path(bench)
    ha = sentinel.spec(settings)  # Sentinel: the same file on every node, plus replication and sentinel users
    db = ha.db if ha else redis_db(settings.redis_url)
    lines = [admin_acl_line(admin_password), bench_acl_line(username, password, db)]
    ha_config: dict[str, str] = {}
    if ha:
        from benchcelery.deploy.sentinel_files import ha_acl_users

        extra, ha_config = ha_acl_users()
        lines += extra
    write_files({path: "\n".join(lines) + "\n"}, overwrite=True)
    path.chmod(0o600)
    bench.update_config({"rq_username": username, "rq_password": password, "use_rq_auth": use_rq_auth, **ha_config})
    if not ha:  # Sentinel layouts: `bench setup redis` renders the node files (sentinels rewrite theirs)
        write_files(render_redis(settings), overwrite=True)
    return RqUsers(username, password, admin_password, str(path), sentinel=ha is not None)
