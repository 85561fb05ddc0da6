"""Who may join which realtime room: apps decide, through a hook; without one, only own or public rooms.

A signed-in user of a site always sits in ``user:<user>`` and ``all``. Before the relay lets the
user join any other room (``doc:``, ``doctype:``, ``task_progress:``), it asks:

1. rooms the user owns: ``user:<user>``, ``doc:User/<user>`` -> yes;
2. rooms declared public in config ``realtime_public_rooms`` (exact names; a trailing ``*``
   matches a prefix) -> yes;
3. every app hook ``has_realtime_permission(user, room)`` (in the app's ``hooks.py``, a dotted
   path or a callable; ``benchcelery.local.site`` is the site) -> yes if one answers True;
4. otherwise no.
"""

from __future__ import annotations

import logging
from typing import Any

from benchcelery.bench.layout import Bench
from benchcelery.context import local
from benchcelery.realtime.publish import ALL_ROOM, doc_room, user_room

logger = logging.getLogger("benchcelery.realtime")

HOOK = "has_realtime_permission"
PUBLIC_ROOMS_KEY = "realtime_public_rooms"


def owned_rooms(user: str) -> set[str]:
    return {user_room(user), doc_room("User", user), ALL_ROOM}


def is_public(room: str, patterns: Any) -> bool:
    if not isinstance(patterns, list):
        return False
    for pattern in patterns:
        if not isinstance(pattern, str):
            continue
        if pattern == room or (pattern.endswith("*") and room.startswith(pattern[:-1])):
            return True
    return False


def may_join(bench: Bench, site: str, user: str, room: str) -> bool:
    """Whether ``user`` of ``site`` may join ``room`` (see the module docstring). Never raises."""
    if room in owned_rooms(user):
        return True
    try:
        if is_public(room, bench.merged_config(site).get(PUBLIC_ROOMS_KEY)):
            return True
        from benchcelery.jobs.hooks import hook_values
        from benchcelery.jobs.methods import resolve

        apps = bench.apps()
        saved = local.site
        local.site = site
        try:
            for hook in hook_values(apps, HOOK):
                fn = hook if callable(hook) else resolve(str(hook), apps)
                if fn(user, room) is True:
                    return True
        finally:
            local.site = saved
    except Exception:  # a broken hook or config refuses; it must not take the relay down
        logger.exception("Room permission check failed for %s on %s (%s): refused", user, site, room)
    return False
