"""Redis ACL of the bench's queue Redis (``bench create-rq-users``), Frappe's layout:

- ``default``: the admin (``nopass``, or a random password with ``--set-admin-password``);
- ``<bench_id>``: this bench's user, confined to its own keys (``~bc:<bench_id>:*``) and its own
  channels (``&bc:<bench_id>:*``, realtime events included: ``Keys.realtime_channel``), and to the
  commands workers, the scheduler (RedBeat), read commands and the realtime relay use. It can run
  no server-wide destructive or enumerating command (``BENCH_USER_COMMANDS``): one bench's user can
  neither wipe nor list another bench on the same server.

Channels: Redis only lets a PSUBSCRIBE through when its pattern is literally granted, so kombu's
control and event patterns (which workers and monitors PSUBSCRIBE) are granted by name
(``Keys.acl_channel_patterns``) besides ``&bc:<bench_id>:*``.

Passwords are stored as SHA-256 (``#<hex>``) in the ACL file and in clear in
common_site_config.json (``rq_username``, ``rq_password``, ``use_rq_auth``), as Frappe does.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from benchcelery.bench.config import Settings
from benchcelery.bench.keys import Keys, is_valid_bench_id
from benchcelery.bench.redis_url import db_number
from benchcelery.deploy.files import acl_path, render_redis, write_files
from benchcelery.errors import ValidationError
from benchcelery.store import sentinel

PASSWORD_BYTES = 15  # 20 characters of URL-safe base64, Frappe's length
# The users a Sentinel layout adds (deploy/sentinel_files.py writes them into the node configs)
# and the config keys create-rq-users stores their passwords under.
REPLICATION_USER = "replication"
SENTINEL_USER = "sentinel"
REPLICATION_PASSWORD = "redis_replication_password"
SENTINEL_USER_PASSWORD = "redis_sentinel_user_password"


@dataclass(frozen=True)
class RqUsers:
    username: str
    password: str
    admin_password: str | None
    acl_file: str
    sentinel: bool = False


def new_password() -> str:
    return secrets.token_urlsafe(PASSWORD_BYTES)


def password_rule(password: str | None) -> str:
    """The ACL rule of a password: ``#<sha256 hex>``, or ``nopass`` when there is none."""
    return f"#{hashlib.sha256(password.encode()).hexdigest()}" if password else "nopass"


def admin_acl_line(password: str | None = None) -> str:
    return f"user default on {password_rule(password)} ~* &* +@all"


# What a bench user may run: everything but @dangerous and @admin (FLUSHALL, FLUSHDB, SWAPDB, KEYS,
# INFO, CONFIG, DEBUG, SHUTDOWN, MONITOR, CLIENT KILL|LIST, SORT, MIGRATE, RESTORE, ACL ...), minus
# what reaches beyond the user's keys although Redis files it elsewhere: enumerating the keyspace
# (SCAN, RANDOMKEY, DBSIZE), moving keys between databases (MOVE), server-wide scripting state
# (SCRIPT FLUSH|KILL, FUNCTION, FCALL) and listing other benches' channels (PUBSUB CHANNELS ...).
# Workers (kombu: lists, hashes, sorted sets, MULTI, pub/sub; the delivery Lua: EVAL/EVALSHA,
# SCRIPT LOAD|EXISTS, LMOVE/BLMOVE/BRPOPLPUSH), RedBeat (its lock is a Lua script) and the read
# commands need nothing more; tests/test_security.py proves both sides against a real server.
BENCH_USER_COMMANDS = (
    "+@all",
    "-@dangerous",
    "-@admin",
    "-scan",
    "-randomkey",
    "-dbsize",
    "-move",
    "-script|flush",
    "-script|kill",
    "-script|debug",
    "-function",
    "-fcall",
    "-fcall_ro",
    "-pubsub|channels",
    "-pubsub|numpat",
    "-pubsub|shardchannels",
    "-client|tracking",
)


def bench_acl_line(bench_id: str, password: str, db: int = 0) -> str:
    """The ACL file line of the bench's user. ``bench_id`` must be of the bench id alphabet (it is
    written as a rule: ``*``, ``?``, ``[`` or a space would widen or break it)."""
    if not is_valid_bench_id(bench_id):
        raise ValidationError(f"bench_id {bench_id[:200]!r} may use only letters, digits, '.', '_' and '-'")
    keys = Keys(bench_id)
    channels = [f"&{pattern}" for pattern in keys.acl_channel_patterns(db)]
    return " ".join(
        [
            "user",
            bench_id,
            "on",
            password_rule(password),
            "resetkeys",
            f"~{keys.acl_key_pattern}",
            "resetchannels",
            *channels,
            *BENCH_USER_COMMANDS,
        ]
    )


def ha_acl_users() -> tuple[list[str], dict[str, str]]:
    """ACL lines of the replication and sentinel users (least privilege, as Redis documents them)
    and their passwords, for ``bench create-rq-users`` with a Sentinel ``redis_queue``."""
    replication, watcher = new_password(), new_password()
    lines = [
        f"user {REPLICATION_USER} on {password_rule(replication)} +psync +replconf +ping",
        f"user {SENTINEL_USER} on {password_rule(watcher)} allchannels +multi +slaveof +ping +exec +subscribe "
        "+config|rewrite +role +publish +info +client|setname +client|kill +script|kill",
    ]
    return lines, {REPLICATION_PASSWORD: replication, SENTINEL_USER_PASSWORD: watcher}


def create_rq_users(settings: Settings, set_admin_password: bool = False, use_rq_auth: bool = False) -> RqUsers:
    """Write config/redis_queue.acl (and re-render redis_queue.conf so it loads it); store the
    bench user's credentials in common_site_config.json. Redis must be restarted to apply them."""
    bench = settings.bench
    username, password = settings.bench_id, new_password()
    admin_password = new_password() if set_admin_password else None
    path = acl_path(bench)
    ha = sentinel.spec(settings)  # Sentinel: the same file on every node, plus replication and sentinel users
    db = ha.db if ha else db_number(settings.redis_url)
    lines = [admin_acl_line(admin_password), bench_acl_line(username, password, db)]
    ha_config: dict[str, str] = {}
    if ha:
        extra, ha_config = ha_acl_users()
        lines += extra
    write_files({path: "\n".join(lines) + "\n"}, overwrite=True)
    path.chmod(0o600)
    bench.update_config({"rq_username": username, "rq_password": password, "use_rq_auth": use_rq_auth, **ha_config})
    if not ha:  # Sentinel layouts: `bench setup redis` renders the node files (sentinels rewrite theirs)
        write_files(render_redis(settings), overwrite=True)
    return RqUsers(username, password, admin_password, str(path), sentinel=ha is not None)
