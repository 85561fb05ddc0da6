"""How often ``bench schedule`` wakes and how long its lock lives.

The loop wakes at least every ``min(scheduler_tick_interval, MAX_LOOP_INTERVAL)`` s; the lock lives
``max(4 x loop, MIN_LOCK_TIMEOUT)`` s (``scheduler_lock_timeout`` overrides). A standby
``bench schedule`` tries to take the lock every loop interval, so after the active one dies
(SIGKILL) it takes over within lock timeout + loop interval: 10 + 2.5 s by default. (The loop
was capped at 10 s before, which made the lock 40 s and a takeover up to 50 s.) A tick extends
the lock first, and again between batches of due runs; a beat that lost its lock anyway (Redis
restarted empty, or the process was stalled past it) takes it again, or waits as a standby
while another holds it (beat.py). A clean stop releases the lock at once.
"""

from __future__ import annotations

from benchcelery.bench.config import DEFAULTS, Settings

MAX_LOOP_INTERVAL = 2.5  # s; keeps standby takeover within ~12 s whatever scheduler_tick_interval says
MIN_LOCK_TIMEOUT = 10
RECONCILE_EVERY = 300.0  # s; a full reconcile even when nothing seems to have changed
RECOUNT_EVERY = 15.0  # s; at most this often when the number of entries in Redis looks wrong


def loop_interval(settings: Settings) -> float:
    """How long beat may sleep between ticks (s)."""
    tick = float(settings.get("scheduler_tick_interval") or DEFAULTS["scheduler_tick_interval"])
    return max(0.2, min(tick, MAX_LOOP_INTERVAL))


def lock_timeout(settings: Settings) -> int:
    """TTL of the active beat's lock (s): at least 4 loop intervals, so a slow tick never loses it."""
    configured = settings.get("scheduler_lock_timeout")
    floor = max(MIN_LOCK_TIMEOUT, int(4 * loop_interval(settings) + 0.999))
    return max(int(configured), floor) if configured else floor


def heartbeat_ttl(loop: float) -> int:
    """TTL of the scheduler heartbeat (s): it outlives a few missed ticks, then shows beat as gone."""
    return max(10, int(3 * loop + 0.999))
