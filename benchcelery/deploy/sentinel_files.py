"""``bench setup redis`` for a Sentinel ``redis_queue``: the configs of a three-node layout.

Each host runs one queue Redis and one sentinel. Node 1's Redis is the master at first, the
others replicate it; every sentinel monitors it (quorum: a majority). Files go to
``config/sentinel/``: ``redis_queue_node<N>.conf`` and ``sentinel_node<N>.conf``, one per host, to
copy there. The hosts and ports of the sentinels come from ``redis_queue``; the data nodes are
the same hosts on port 11000 unless ``--nodes host:port,...`` says otherwise.

When ``bench create-rq-users`` made the ACL (``config/redis_queue.acl``, to copy to every node:
ACLs are not replicated), the data nodes load it, replicas log in to the master as the
``replication`` user and sentinels as the ``sentinel`` user.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from benchcelery.bench.config import Settings
from benchcelery.bench.redis_url import HOST
from benchcelery.deploy.acl import REPLICATION_PASSWORD, REPLICATION_USER, SENTINEL_USER, SENTINEL_USER_PASSWORD
from benchcelery.deploy.files import REDIS_DATA, acl_path
from benchcelery.deploy.safe import check_path, redis_quote
from benchcelery.deploy.templates import render
from benchcelery.errors import ValidationError
from benchcelery.store import sentinel

NODE_PORT = 11000
DOWN_AFTER_MS = 5000
FAILOVER_TIMEOUT_MS = 60000
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def parse_nodes(value: str) -> list[tuple[str, int]]:
    """``host:port,host:port`` -> [(host, port)]; ValidationError when malformed."""
    nodes = []
    for item in filter(None, (v.strip() for v in value.split(","))):
        host, _, port = item.rpartition(":")
        if not HOST.match(host.strip("[]")) or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValidationError(f"--nodes: {item[:100]!r} is not host:port")
        nodes.append((host.strip("[]"), int(port)))
    if not nodes:
        raise ValidationError("--nodes: name at least one host:port")
    return nodes


def render_sentinel_layout(
    settings: Settings,
    nodes: list[tuple[str, int]] | None = None,
    down_after_ms: int = DOWN_AFTER_MS,
    failover_timeout_ms: int = FAILOVER_TIMEOUT_MS,
) -> dict[Path, str]:
    spec = sentinel.spec(settings)
    if spec is None:
        raise ValidationError("redis_queue is not a sentinel:// URL: nothing to lay out")
    bench = settings.bench
    folder = bench.config_path / "sentinel"
    data = nodes or [(host, NODE_PORT) for host, _ in spec.nodes]
    master_host, master_port = data[0]
    conf = settings.conf
    acl = acl_path(bench)
    repl_password = conf.get(REPLICATION_PASSWORD)
    files: dict[Path, str] = {}
    for i, (host, port) in enumerate(data, 1):
        replica = i > 1
        files[folder / f"redis_queue_node{i}.conf"] = render(
            "sentinel/redis_node.conf",
            node=i,
            nodes=len(data),
            bench_root=check_path(bench.root),
            host=host,
            role_why=(
                "A replica of node 1 at first; the sentinels re-point it after a failover (and rewrite replicaof)."
                if replica
                else "The master at first; after a failover the sentinels make it a replica of the new master."
            ),
            bind=_bind(host),
            port=port,
            data_dir=redis_quote(bench.config_path / REDIS_DATA / f"redis_queue_node{i}"),
            replica_lines=(
                f"\n# The master this node replicates at first.\nreplicaof {master_host} {master_port}\n"
                if replica
                else ""
            ),
            auth_lines=(
                "\n# Replicas log in to the master as the ACL user `bench create-rq-users` made for it.\n"
                f"masteruser {REPLICATION_USER}\nmasterauth {repl_password}\n"
                if repl_password
                else ""
            ),
            aclfile_line=(
                "\n# Users (`bench create-rq-users`): admin, the bench's user, replication, sentinel. ACLs are\n"
                f"# not replicated: copy this file to every node.\naclfile {redis_quote(acl)}\n"
                if acl.is_file()
                else ""
            ),
        )
    quorum = len(spec.nodes) // 2 + 1
    named = any(not _is_ip(h) for h, _ in [*spec.nodes, *data])
    sentinel_password = conf.get(SENTINEL_USER_PASSWORD)
    for i, (host, port) in enumerate(spec.nodes, 1):
        auth: list[str] = []
        if sentinel_password:
            auth += [
                "# The sentinel logs in to the Redis nodes as the ACL user `bench create-rq-users` made for it.",
                f"sentinel auth-user {spec.service} {SENTINEL_USER}",
                f"sentinel auth-pass {spec.service} {sentinel_password}",
            ]
        if spec.sentinel_password:
            auth += [
                "# Clients (and the other sentinels) give this password (sentinel_password in the bench config).",
                f"requirepass {spec.sentinel_password}",
            ]
        files[folder / f"sentinel_node{i}.conf"] = render(
            "sentinel/sentinel.conf",
            node=i,
            nodes=len(spec.nodes),
            bench_root=check_path(bench.root),
            host=host,
            quorum=quorum,
            bind=_bind(host),
            port=port,
            data_dir=redis_quote(bench.config_path / REDIS_DATA / f"sentinel_node{i}"),
            resolve_line="# Hosts are given by name.\nsentinel resolve-hostnames yes\n" if named else "",
            service=spec.service,
            master_host=master_host,
            master_port=master_port,
            down_after=down_after_ms,
            failover_timeout=failover_timeout_ms,
            auth_lines="\n".join(auth) + ("\n" if auth else ""),
        )
    return files


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return host == "localhost"
    return True


def _bind(host: str) -> str:
    return "127.0.0.1" if host in LOOPBACK else f"127.0.0.1 {host}"
