"""Realtime events: publishing in Frappe's wire format, and the socket.io relay (``bench realtime``).

``publish_realtime`` and the token helpers need only Redis; the relay server (``server.py``) needs
the ``realtime`` extra (python-socketio, uvicorn) and is imported only by ``bench realtime``.
"""

from __future__ import annotations

from benchcelery.realtime.publish import PublishResult, RealtimeEvent, build_event, publish_realtime, room_for

__all__ = ["PublishResult", "RealtimeEvent", "build_event", "publish_realtime", "room_for"]
