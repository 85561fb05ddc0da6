"""Publishing realtime events: Frappe's room rules and wire format, and ``after_commit``.

An event is one ``PUBLISH bc:<bench_id>:realtime <json>`` on the bench's queue Redis, with the JSON
``{"event", "message", "room", "namespace": <site>, "bench": <bench_id>}``. The first four keys are
Frappe's wire format. The channel is the bench's own (``Keys.realtime_channel``, inside its Redis
ACL scope), not Frappe's global ``events``: another bench's user can neither read nor inject
events here, and the relay drops any message whose ``bench`` is not its own.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from typing import Any

from benchcelery.context import local
from benchcelery.errors import BenchError
from benchcelery.runtime import Runtime, get_runtime

logger = logging.getLogger("benchcelery.realtime")

# socket.io room names (rooms live in the relay's memory, not in Redis).
ALL_ROOM = "all"  # every signed-in user of a site


def user_room(user: str) -> str:
    return f"user:{user}"


def doc_room(doctype: str, docname: str) -> str:
    return f"doc:{doctype}/{docname}"


def doctype_room(doctype: str) -> str:
    return f"doctype:{doctype}"


def task_room(task_id: str) -> str:
    return f"task_progress:{task_id}"


def room_for(
    event: str,
    room: str | None = None,
    user: str | None = None,
    doctype: str | None = None,
    docname: str | None = None,
) -> str:
    """Frappe's room rules: an explicit room, else ``user:<user>``, else ``doc:<doctype>/<docname>``,
    else ``doctype:<doctype>``, else ``all``. As in Frappe, ``list_update`` goes to the doctype's
    room and ``docinfo_update`` to the document's room even when a user is given."""
    if room:
        return room
    if event == "list_update" and doctype:
        return doctype_room(doctype)
    if event == "docinfo_update" and doctype and docname:
        return doc_room(doctype, docname)
    if user:
        return user_room(user)
    if doctype and docname:
        return doc_room(doctype, docname)
    if doctype:
        return doctype_room(doctype)
    return ALL_ROOM


@dataclass(frozen=True)
class RealtimeEvent:
    event: str
    message: Any
    room: str
    namespace: str  # the site
    bench: str

    def to_json(self) -> str:
        return json.dumps(asdict(self), default=str, sort_keys=True)


@dataclass(frozen=True)
class PublishResult:
    event: RealtimeEvent
    # Relay subscribers that received it (Redis' PUBLISH count); None while held for after_commit.
    receivers: int | None

    @property
    def held(self) -> bool:
        return self.receivers is None


def build_event(
    event: str,
    message: Any = None,
    room: str | None = None,
    user: str | None = None,
    doctype: str | None = None,
    docname: str | None = None,
    *,
    site: str,
    bench_id: str,
) -> RealtimeEvent:
    if not event:
        raise BenchError("A realtime event needs a name")
    if event == "msgprint" and not user and not room:
        user = local.user  # Frappe: a msgprint goes to the current user
    return RealtimeEvent(
        event=event,
        message={} if message is None else message,
        room=room_for(event, room, user, doctype, docname),
        namespace=site,
        bench=bench_id,
    )


def publish_realtime(
    event: str,
    message: Any = None,
    room: str | None = None,
    user: str | None = None,
    doctype: str | None = None,
    docname: str | None = None,
    after_commit: bool = False,
    *,
    site: str | None = None,
) -> PublishResult:
    """Publish ``event`` with ``message`` (any JSON-able value) to a room of the current site.

    Inside a job, ``after_commit=True`` holds the event until the job has finished successfully
    and drops it if the job fails (``receivers`` is then None); elsewhere it is sent at once.
    ``site`` defaults to the current site (``benchcelery.local.site``).

    Raises BenchError without a site, RedisUnavailableError (or redis' ConnectionError) when Redis
    is unreachable.
    """
    site = site or local.site
    if not site:
        raise BenchError("publish_realtime needs a site: call benchcelery.init(site=...) first")
    rt = get_runtime()
    ev = build_event(event, message, room, user, doctype, docname, site=site, bench_id=rt.settings.bench_id)
    job = local.job
    if after_commit and job is not None and isinstance(job.get("on_commit"), list):
        # Deduplicated per job, as Frappe's realtime log is per transaction.
        held: set[str] = job.setdefault("realtime_held", set())
        payload = ev.to_json()
        if payload not in held:
            held.add(payload)
            job["on_commit"].append(lambda: _send_after_commit(rt, ev))
        return PublishResult(ev, None)
    return PublishResult(ev, send(rt, ev))


def send(rt: Runtime, ev: RealtimeEvent) -> int:
    """PUBLISH the event; returns how many subscribers (relays) received it."""
    return int(rt.redis.publish(rt.keys.realtime_channel, ev.to_json()))


def _send_after_commit(rt: Runtime, ev: RealtimeEvent) -> None:
    # The job already succeeded: a Redis hiccup here must not turn it into a failure.
    try:
        send(rt, ev)
    except Exception as exc:
        logger.warning("Could not publish realtime event %s to %s/%s: %s", ev.event, ev.namespace, ev.room, exc)
