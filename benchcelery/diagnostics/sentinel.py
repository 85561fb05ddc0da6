"""``doctor``'s view of a Sentinel set-up: the current master, its replicas, and whether the
sentinels can still agree on a failover (``SENTINEL MASTER / REPLICAS / CKQUORUM`` on each).

Problems reported: fewer sentinels reachable than a majority, a failed quorum check, sentinels
that disagree on the master, no healthy replica (losing the master then loses the queue), fewer
healthy replicas than ``enqueue_wait_replicas`` asks for.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from benchcelery.store.sentinel import SentinelSpec, sentinel_kwargs


@dataclass
class SentinelNode:
    address: str
    reachable: bool
    master: str | None = None  # the master this sentinel names
    error: str = ""


@dataclass
class ReplicaInfo:
    address: str
    healthy: bool
    flags: str
    link: str  # master-link-status as the sentinels see it
    offset: int = 0


@dataclass
class SentinelHealth:
    service: str
    master: str | None
    replicas: list[ReplicaInfo]
    sentinels: list[SentinelNode]
    quorum: int | None
    quorum_check: str  # SENTINEL CKQUORUM's answer
    problems: list[str] = field(default_factory=list)

    @property
    def healthy_replicas(self) -> int:
        return sum(1 for r in self.replicas if r.healthy)


def _addr(ip: Any, port: Any) -> str:
    return f"{ip}:{port}"


def sentinel_health(s: SentinelSpec, wait_replicas: int = 0) -> SentinelHealth:
    """Ask every sentinel; never raises for an unreachable one (it is reported)."""
    import redis

    nodes: list[SentinelNode] = []
    master_state: dict[str, Any] | None = None
    replicas: list[dict[str, Any]] = []
    quorum_check = ""
    for host, port in s.nodes:
        node = SentinelNode(_addr(host, port), reachable=False)
        nodes.append(node)
        client = redis.Redis(host=host, port=port, **sentinel_kwargs(s))
        try:
            state = client.sentinel_master(s.service)
            node.reachable = True
            node.master = _addr(state["ip"], state["port"])
            if master_state is None:
                master_state = state
                replicas = client.sentinel_slaves(s.service)
                try:
                    quorum_check = str(client.execute_command("SENTINEL", "CKQUORUM", s.service), "utf-8")
                except redis.ResponseError as exc:
                    quorum_check = str(exc)
        except redis.ResponseError as exc:
            node.reachable, node.error = True, str(exc)
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            node.error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        finally:
            client.close()
    infos = [
        ReplicaInfo(
            address=_addr(r["ip"], r["port"]),
            healthy=not (r.get("is_sdown") or r.get("is_disconnected")) and r.get("master-link-status") == "ok",
            flags=str(r.get("flags", "")),
            link=str(r.get("master-link-status", "")),
            offset=int(r.get("slave-repl-offset") or 0),
        )
        for r in replicas
    ]
    health = SentinelHealth(
        service=s.service,
        master=_addr(master_state["ip"], master_state["port"]) if master_state else None,
        replicas=infos,
        sentinels=nodes,
        quorum=int(master_state["quorum"]) if master_state else None,
        quorum_check=quorum_check,
    )
    health.problems = _problems(health, len(s.nodes), wait_replicas)
    return health


def _problems(h: SentinelHealth, configured: int, wait_replicas: int) -> list[str]:
    problems: list[str] = []
    answering = [n for n in h.sentinels if n.master]
    majority = configured // 2 + 1
    if not answering:
        problems.append(f"Sentinel: no sentinel knows the master {h.service!r}; check redis_queue and the sentinels")
        return problems
    if len(answering) < majority:
        problems.append(
            f"Sentinel: only {len(answering)} of {configured} sentinels answer; a failover needs {majority}"
        )
    if h.quorum_check and not h.quorum_check.startswith("OK"):
        problems.append(f"Sentinel: quorum check failed: {h.quorum_check}")
    if len({n.master for n in answering}) > 1:
        named = ", ".join(f"{n.address} -> {n.master}" for n in answering)
        problems.append(f"Sentinel: the sentinels disagree on the master ({named})")
    if not h.healthy_replicas:
        problems.append("Sentinel: no healthy replica; if the master is lost, the queue is lost with it")
    elif wait_replicas > h.healthy_replicas:
        problems.append(
            f"Sentinel: enqueue_wait_replicas is {wait_replicas} but only {h.healthy_replicas} replica(s) are "
            "healthy: every enqueue waits for its timeout"
        )
    return problems


def render_text(h: SentinelHealth) -> list[str]:
    up = sum(1 for n in h.sentinels if n.master)
    lines = [
        f"Sentinel {h.service}: master {h.master or 'unknown'}; {up} of {len(h.sentinels)} sentinels answer, "
        f"quorum {h.quorum if h.quorum is not None else '?'} ({h.quorum_check or 'not checked'})"
    ]
    for r in h.replicas:
        lines.append(f"  - replica {r.address}: {'healthy' if r.healthy else r.flags} (link {r.link or '?'})")
    for n in h.sentinels:
        if not n.master:
            lines.append(f"  - sentinel {n.address}: {n.error or 'no answer'}")
    return lines
