"""``bench realtime``: a socket.io server relaying the bench's realtime events to browsers.

One process serves every site of the bench, each in its own socket.io namespace ``/<site>``:

- a client connects to ``/<site>`` with the auth payload ``{"token": <token>}`` (see ``tokens.py``);
  without a valid token for that site it is refused. It then sits in the rooms ``user:<user>`` and
  ``all``, and may join ``doc:``/``doctype:``/``task_progress:`` rooms with Frappe's events
  ``doc_subscribe``, ``doctype_subscribe``, ``task_subscribe`` (and leave with ``*_unsubscribe``)
  when ``rooms.may_join`` allows it (own or public rooms, else an app's ``has_realtime_permission``);
- a task subscribes to the bench's own channel (``Keys.realtime_channel``, Frappe's wire format)
  and emits each event that names this bench and one of its sites to its room in that site's
  namespace (anything else is dropped). When Redis goes away it logs it,
  retries with a capped backoff and logs when it is back (pub/sub events sent meanwhile are lost,
  as in Frappe);
- ``GET /health`` answers 200 ``{"redis": true, ...}`` while subscribed, else 503.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import socketio
from socketio.exceptions import ConnectionRefusedError as Refused

from benchcelery.bench.config import Settings
from benchcelery.bench.redis_url import mask_url
from benchcelery.errors import BenchError
from benchcelery.realtime.publish import ALL_ROOM, doc_room, doctype_room, task_room, user_room
from benchcelery.realtime.rooms import may_join
from benchcelery.realtime.tokens import InvalidToken, verify_token
from benchcelery.util.net import check_port_free

logger = logging.getLogger("benchcelery.realtime")

# Events a relay must never emit: socket.io clients treat them as protocol events.
RESERVED_EVENTS = frozenset(
    {"connect", "connect_error", "disconnect", "disconnecting", "newListener", "removeListener"}
)
RETRY_DELAYS = (0.2, 0.5, 1.0, 2.0)  # backoff between Redis reconnect attempts (s); capped low: a
# restarted Redis should be relayed again within seconds, and a refused connect costs nothing
HEALTH_CHECK_INTERVAL = 10  # s; a PING on the subscriber connection notices dead links


@dataclass(frozen=True)
class ServeOptions:
    host: str
    port: int
    cors_allowed_origins: str | list[str] = "*"
    log_level: str = "info"


class Relay:
    """The socket.io server and its Redis subscriber."""

    def __init__(self, settings: Settings, cors_allowed_origins: str | list[str] = "*") -> None:
        self.settings = settings
        self.bench = settings.bench
        self.redis_connected = False
        self.relayed = 0
        self._task: asyncio.Task[None] | None = None
        # Tokens, not cookies, authenticate clients, so a page served from another origin (the site
        # on :8000, this server on :9000) may connect; restrict with realtime_cors_allowed_origins.
        self.sio = socketio.AsyncServer(async_mode="asgi", namespaces="*", cors_allowed_origins=cors_allowed_origins)
        self.sio.on("connect", self.on_connect, namespace="*")
        self.sio.on("disconnect", self.on_disconnect, namespace="*")
        for name, handler in {
            "doc_subscribe": self.on_doc_subscribe,
            "doc_open": self.on_doc_subscribe,
            "doc_unsubscribe": self.on_doc_unsubscribe,
            "doc_close": self.on_doc_unsubscribe,
            "doctype_subscribe": self.on_doctype_subscribe,
            "doctype_unsubscribe": self.on_doctype_unsubscribe,
            "task_subscribe": self.on_task_subscribe,
            "progress_subscribe": self.on_task_subscribe,
            "task_unsubscribe": self.on_task_unsubscribe,
        }.items():
            self.sio.on(name, handler, namespace="*")
        self.app = socketio.ASGIApp(self.sio, other_asgi_app=self.http, on_startup=self.start, on_shutdown=self.stop)

    # --- socket.io side ---
    async def on_connect(self, namespace: str, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        site = namespace.strip("/")
        peer = environ.get("REMOTE_ADDR") or "?"
        if not self.bench.site_exists(site):
            logger.info("Refused %s: no site %r in this bench", peer, site)
            raise Refused(f"unknown site {site}")
        token = auth.get("token") if isinstance(auth, dict) else None
        try:
            user = verify_token(self.bench, site, token)
        except (InvalidToken, BenchError) as exc:
            logger.info("Refused %s on %s: %s", peer, site, exc)
            raise Refused(f"not authorized: {exc}") from None
        await self.sio.save_session(sid, {"site": site, "user": user}, namespace=namespace)
        await self.sio.enter_room(sid, user_room(user), namespace=namespace)
        await self.sio.enter_room(sid, ALL_ROOM, namespace=namespace)
        logger.debug("Connected %s as %s on %s", peer, user, site)

    async def on_disconnect(self, namespace: str, sid: str, reason: Any = None) -> None:
        logger.debug("Disconnected %s from %s (%s)", sid, namespace, reason)

    async def _join(self, namespace: str, sid: str, room: str | None, leave: bool = False) -> str | None:
        """Join or leave ``room``; the ack tells the client the room (None when refused)."""
        if room is None:
            return None
        if not leave:
            session = await self.sio.get_session(sid, namespace=namespace)
            site, user = session.get("site"), session.get("user")
            if not await asyncio.to_thread(may_join, self.bench, site, user, room):
                logger.info("Refused %s on %s: may not join room %s", user, site, room[:200])
                return None
        if leave:
            await self.sio.leave_room(sid, room, namespace=namespace)
        else:
            await self.sio.enter_room(sid, room, namespace=namespace)
        return room

    async def on_doc_subscribe(self, namespace: str, sid: str, doctype: Any = None, docname: Any = None) -> str | None:
        return await self._join(namespace, sid, _doc_room(doctype, docname))

    async def on_doc_unsubscribe(
        self, namespace: str, sid: str, doctype: Any = None, docname: Any = None
    ) -> str | None:
        return await self._join(namespace, sid, _doc_room(doctype, docname), leave=True)

    async def on_doctype_subscribe(self, namespace: str, sid: str, doctype: Any = None) -> str | None:
        return await self._join(namespace, sid, doctype_room(doctype) if _name(doctype) else None)

    async def on_doctype_unsubscribe(self, namespace: str, sid: str, doctype: Any = None) -> str | None:
        return await self._join(namespace, sid, doctype_room(doctype) if _name(doctype) else None, leave=True)

    async def on_task_subscribe(self, namespace: str, sid: str, task_id: Any = None) -> str | None:
        return await self._join(namespace, sid, task_room(task_id) if _name(task_id) else None)

    async def on_task_unsubscribe(self, namespace: str, sid: str, task_id: Any = None) -> str | None:
        return await self._join(namespace, sid, task_room(task_id) if _name(task_id) else None, leave=True)

    # --- Redis side ---
    async def start(self) -> None:
        self._task = asyncio.create_task(self.subscribe_forever(), name="redis-subscriber")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass

    def _redis_client(self) -> Any:
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        from benchcelery.store.connection import make_async_client

        # No silent retries inside redis-py: this loop reconnects, so it can say so in the log.
        return make_async_client(
            self.settings,
            socket_connect_timeout=2,
            socket_keepalive=True,
            health_check_interval=HEALTH_CHECK_INTERVAL,
            retry=Retry(NoBackoff(), 0),
        )

    async def subscribe_forever(self) -> None:
        url = mask_url(self.settings.redis_url)
        lost_at: float | None = None
        ever_connected = False
        attempt = 0
        while True:
            client = self._redis_client()
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.settings.keys.realtime_channel)
                self.redis_connected = True
                attempt = 0
                if not ever_connected:
                    logger.info("Subscribed to Redis channel %r at %s", self.settings.keys.realtime_channel, url)
                elif lost_at is not None:
                    logger.warning(
                        "Reconnected to Redis at %s after %.1f s; relaying events again",
                        url,
                        time.monotonic() - lost_at,
                    )
                ever_connected, lost_at = True, None
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message and message.get("type") == "message":
                        await self.relay_safely(message["data"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a relay must outlive any Redis failure
                self.redis_connected = False
                if lost_at is None:
                    lost_at = time.monotonic()
                    what = "Lost Redis connection at" if ever_connected else "Cannot reach Redis at"
                    logger.warning("%s %s (%s); retrying until it is back", what, url, _describe(exc))
                else:
                    logger.debug("Redis at %s still unreachable: %s", url, _describe(exc))
            finally:
                self.redis_connected = False
                for closer in (pubsub.aclose, client.aclose):
                    try:
                        await closer()
                    except Exception:
                        pass
            await asyncio.sleep(RETRY_DELAYS[min(attempt, len(RETRY_DELAYS) - 1)])
            attempt += 1

    async def relay_safely(self, raw: bytes | str) -> None:
        # One bad event must not look like a Redis failure (that would drop the subscription).
        try:
            await self.relay(raw)
        except Exception:
            logger.exception("Could not relay a realtime event")

    async def relay(self, raw: bytes | str) -> bool:
        """Emit one realtime message to its room; False when it is not for this bench or malformed."""
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            logger.debug("Ignored a malformed realtime message: %r", raw[:200])
            return False
        if not isinstance(data, dict):
            return False
        site, event = data.get("namespace"), data.get("event")
        if not (isinstance(site, str) and isinstance(event, str) and event) or event in RESERVED_EVENTS:
            return False
        # Only events that name this bench (a message without the field, or another bench's, is
        # dropped even on our own channel).
        if data.get("bench") != self.settings.bench_id:
            return False
        if not self.bench.site_exists(site):
            return False
        room = data.get("room") or ALL_ROOM
        await self.sio.emit(event, data.get("message"), to=str(room), namespace=f"/{site}")
        self.relayed += 1
        logger.debug("Relayed %s to %s/%s", event, site, room)
        return True

    # --- plain HTTP: a health check ---
    async def http(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        path = scope.get("path", "")
        if path.rstrip("/") == "/health":
            body = {"redis": self.redis_connected, "relayed": self.relayed, "bench_id": self.settings.bench_id}
            status = 200 if self.redis_connected else 503
        else:
            body, status = {"error": "not found"}, 404
        payload = json.dumps(body).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": payload})


def _name(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _doc_room(doctype: Any, docname: Any) -> str | None:
    if isinstance(doctype, dict):  # some clients send {"doctype": ..., "docname"/"name": ...}
        doctype, docname = doctype.get("doctype"), doctype.get("docname") or doctype.get("name")
    return doc_room(doctype, docname) if _name(doctype) and _name(docname) else None


def _describe(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def serve(settings: Settings, options: ServeOptions) -> None:
    """Run the relay until SIGINT/SIGTERM. Raises BenchError when the port is taken."""
    import uvicorn

    check_port_free(options.host, options.port)
    relay = Relay(settings, options.cors_allowed_origins)
    sites = settings.bench.sites()
    logger.info(
        "Realtime server of bench %s on http://%s:%d (namespaces: %s)",
        settings.bench_id,
        options.host,
        options.port,
        ", ".join(f"/{s}" for s in sites) or "none yet",
    )
    config = uvicorn.Config(
        relay.app,
        host=options.host,
        port=options.port,
        log_level=options.log_level,
        access_log=False,
        lifespan="on",
        log_config=None,
    )
    uvicorn.Server(config).run()
