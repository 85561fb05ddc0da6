"""kombu's per-turn registration of the Redis sockets, without a failing system call per turn.

On every turn of the event loop kombu's Redis transport calls ``loop.add_reader`` for each socket
of its poller (``MultiChannelPoller.fds``). For a socket already in the loop that is an
``epoll_ctl(ADD)`` failing with EEXIST (ignored by kombu's epoll wrapper) behind a few Python
calls: ~2 failing system calls per job on a busy worker. Here a turn adds only the sockets the loop
does not hold with this transport's reader; every REFRESH seconds a turn adds them all, as kombu
does, so a registration lost in a way not foreseen here costs at most that long.

Why skipping is safe: a socket leaves the poller only through ``Hub.remove_reader``/``remove``
(kombu's disconnect handler, a paused BRPOP, the hub's reset), which also drops its entry from
``loop.readers``; so an fd that has our entry there is in the poller, and one that lost it is added
again on the same turn, after kombu's ``on_poll_start`` (re)registered the channel's socket.
"""

from __future__ import annotations

from time import monotonic
from typing import Any

REFRESH = 1.0  # s between turns that add every socket again (kombu's own behaviour)
_KOMBU_TICK = "Transport.register_with_event_loop.<locals>.on_poll_start"


def register_quietly(transport: Any, loop: Any, ticks_before: set[Any]) -> bool:
    """Replace the per-turn callback kombu's ``register_with_event_loop`` just added to ``loop``
    (the ticks it had before are ``ticks_before``); False (kombu's kept) when it is not found."""
    added = [tick for tick in loop.on_tick if tick not in ticks_before]
    if len(added) != 1 or getattr(added[0], "__qualname__", "") != _KOMBU_TICK:
        return False
    cycle = transport.cycle
    cycle_poll_start = cycle.on_poll_start
    readers, add_reader = loop.readers, loop.add_reader
    on_readable = transport.on_readable  # one bound method, so an entry of ours is recognised by identity
    refresh_at = 0.0

    def on_poll_start() -> None:
        nonlocal refresh_at
        cycle_poll_start()
        now = monotonic()
        everything = now >= refresh_at
        if everything:
            refresh_at = now + REFRESH
        for fd in list(cycle.fds):
            entry = readers.get(fd)
            if everything or entry is None or entry[0] is not on_readable:
                add_reader(fd, on_readable, fd)

    loop.on_tick.discard(added[0])
    loop.on_tick.add(on_poll_start)
    return True
