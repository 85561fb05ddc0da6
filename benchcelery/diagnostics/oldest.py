"""The oldest waiting jobs, per queue and site: when they were enqueued, and how old they are.

``oldest_waiting`` is the one reader of the queues' oldest ends (``bench metrics``, ``doctor`` and the
dashboard all read them here); ``oldest_ages`` is the view for pages that show ages: the queue's age
is exact; a site's is the age of its oldest job among the oldest ``window`` messages of each list,
and a site with no job among them has no age here (shown as unknown).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import redis

    from benchcelery.bench.keys import Keys

SITE_WINDOW = 10_000  # messages read per priority list (at most) to find each site's oldest job

# Oldest waiting job per queue and per site, without reading whole queues. KEYS: every priority
# list of every queue, in order; ARGV: window, then per queue: number of lists, number of sites with
# waiting jobs (the scan of a list stops once it has seen that many sites). Returns per queue
# {queue oldest, site, enqueued_at, site, enqueued_at, ...}, timestamps as strings ('' = unknown).
_OLDEST = """
local window = tonumber(ARGV[1])
local out = {}
local k = 1
local a = 2
while a <= #ARGV do
  local nlists, nsites = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  a = a + 2
  local oldest = nil
  local sites = {}
  for l = 1, nlists do
    local key = KEYS[k]
    k = k + 1
    local len = redis.call('LLEN', key)
    local here = {}
    local seen = 0
    local pos = -1
    while pos >= -len and pos >= -window do
      local items = redis.call('LRANGE', key, math.max(-len, pos - 99, -window), pos)
      for i = #items, 1, -1 do
        local item = items[i]
        local site = '?'
        local s = string.find(item, '"id": "', 1, true)
        if s then
          local e = string.find(item, '"', s + 7, true)
          site = e and string.match(string.sub(item, s + 7, e - 1), '^([^:]*)::') or '?'
        end
        local first = pos == -1 and i == #items
        if first or here[site] == nil then
          -- plain find first (fast); the pattern only for an unusually formatted message
          local p = string.find(item, '"enqueued_at": ', 1, true)
          local at = tonumber(p and string.match(item, '^[-%d%.eE+]+', p + 15)
            or string.match(item, '"enqueued_at":%s*([-%d%.eE+]+)'))
          if at then
            if first and (oldest == nil or at < oldest) then oldest = at end
            if sites[site] == nil or at < sites[site] then sites[site] = at end
          end
          if here[site] == nil then
            here[site] = true
            seen = seen + 1
          end
        end
      end
      pos = pos - #items
      if seen >= nsites or #items == 0 then break end
    end
  end
  local row = {oldest and string.format('%.6f', oldest) or ''}
  for site, at in pairs(sites) do
    table.insert(row, site)
    table.insert(row, string.format('%.6f', at))
  end
  table.insert(out, row)
end
return out
"""


@dataclass(frozen=True)
class OldestAge:
    seconds: float  # age of the oldest waiting job


def oldest_ages(
    r: redis.Redis,
    keys: Keys,
    queues: Iterable[str],
    pending: dict[str, dict[str, int]],
    window: int = SITE_WINDOW,
    now: float | None = None,
) -> dict[str, dict[str, OldestAge]]:
    """queue -> site -> age of its oldest waiting job; the site ``""`` holds the queue's oldest.
    ``pending``: queue -> site -> count (``inspect.count_pending``)."""
    now = time.time() if now is None else now
    found = oldest_waiting(r, keys, {q: pending.get(q, {}) for q in queues}, window)
    out: dict[str, dict[str, OldestAge]] = {}
    for q, (oldest, per_site) in found.items():
        stamps = {**per_site, **({"": oldest} if oldest is not None else {})}
        out[q] = {site: OldestAge(max(0.0, now - stamp)) for site, stamp in stamps.items()}
    return out


def oldest_waiting(
    r: redis.Redis, keys: Keys, pending: dict[str, dict[str, int]], window: int = SITE_WINDOW
) -> dict[str, tuple[float | None, dict[str, float]]]:
    """queue -> (enqueue time of its oldest waiting job, site -> enqueue time of the site's oldest).

    The queue's figure is exact (the right end of each priority list). A site's figure is the oldest
    of its jobs among the ``window`` oldest messages of each list (a list is read from its oldest end
    until every site with waiting jobs was seen); a site none of whose jobs is among them is left out.
    One script call over kombu's per-queue lists (messages not yet moved to their site's lists);
    each site's own lists add their oldest message each (one pipelined LINDEX per list, exact).
    """
    queues = list(pending)
    if not queues:
        return {}
    lists: list[str] = []
    argv: list[int] = [window]
    for q in queues:
        names = keys.queue_lists(q)
        lists += names
        argv += [len(names), sum(1 for n in pending[q].values() if n > 0)]
    rows = r.register_script(_OLDEST)(keys=lists, args=argv)
    out: dict[str, tuple[float | None, dict[str, float]]] = {}
    for q, row in zip(queues, rows, strict=True):
        texts = [x.decode() if isinstance(x, bytes) else str(x) for x in row]
        oldest = float(texts[0]) if texts and texts[0] else None
        out[q] = (oldest, {texts[i]: float(texts[i + 1]) for i in range(1, len(texts) - 1, 2)})
    _add_site_oldest(r, keys, pending, out)
    return out


_ENQUEUED_AT = re.compile(rb'"enqueued_at":\s*([-0-9.eE+]+)')


def _add_site_oldest(
    r: redis.Redis,
    keys: Keys,
    pending: dict[str, dict[str, int]],
    out: dict[str, tuple[float | None, dict[str, float]]],
) -> None:
    """Fold the oldest message of each site's own lists (their right ends) into ``out``."""
    pipe = r.pipeline(transaction=False)
    wanted = [(q, site) for q, per_site in pending.items() for site, n in per_site.items() if n > 0]
    for q, site in wanted:
        for key in keys.site_lists(q, site):
            pipe.lindex(key, -1)
    items = iter(pipe.execute() if wanted else [])
    for q, site in wanted:
        oldest, sites = out[q]
        for item in [next(items) for _ in keys.site_lists(q, site)]:
            found = _ENQUEUED_AT.search(item) if item else None
            at = float(found.group(1)) if found else None
            if at is None:
                continue
            sites[site] = min(at, sites.get(site, at))
            oldest = at if oldest is None else min(oldest, at)
        out[q] = (oldest, sites)
