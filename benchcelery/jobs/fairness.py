"""How sites share a queue: weights, caps and rate limits from the bench's config, written to Redis
where the fetch script reads them (broker/lua/fetch.lua).

- ``queue_weight`` (a site's ``site_config.json``; default 1): a site with weight 2 gets twice the
  turns of a site with weight 1 while both have jobs waiting.
- ``queue_max_running`` (a site's ``site_config.json``), e.g. ``{"default": 2}``: at most that many
  of the site's jobs of that queue run at once, bench-wide (counted in ``running:<queue>``).
- ``rate_limits``, e.g. ``{"myapp.api.sync": "10/s"}`` (units ``/s``, ``/m``, ``/h``): in
  ``common_site_config.json`` one limit per method for the whole bench; in a site's
  ``site_config.json`` a limit of that site's jobs of the method. A job held back by a limit stays
  where it waits; workers take other jobs meanwhile and fetch again when it may start. An app may
  declare a method's limit with ``@benchcelery.rate_limit`` (jobs/ratelimit.py); config wins.

Workers write these at start and every POLICY_INTERVAL seconds (``sync_policy``); a site's pause
(jobs/site_pause.py) is operator state in the same hash and is never touched here, nor are the
decorators' declarations in the ``rates`` hash other than those of functions this process imported.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from benchcelery.bench.keys import RATE_DECLARED, RATE_SITE_SEP
from benchcelery.bench.schema import parse_rate  # the rate syntax lives with the config checks
from benchcelery.errors import ValidationError
from benchcelery.jobs.ratelimit import declared_fields

if TYPE_CHECKING:
    import redis

    from benchcelery.bench.keys import Keys
    from benchcelery.bench.layout import Bench

logger = logging.getLogger("benchcelery.jobs.fairness")

POLICY_INTERVAL = 10.0  # s between two syncs of a worker
FIELD_SEP = RATE_SITE_SEP  # <site>\x1f<method>: a site's own limit of a method


def _weight(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 < value <= 1000:
        return float(value)
    return None


def desired(bench: Bench, queues: Iterable[str]) -> tuple[dict[str, dict[str, str]], dict[str, str], list[str]]:
    """(queue -> {w:<site>/c:<site>: value}, rate field -> ms, problems) from the bench's config."""
    queues = list(queues)
    per_queue: dict[str, dict[str, str]] = {q: {} for q in queues}
    rates: dict[str, str] = {}
    problems: list[str] = []
    _rates(bench.common_config().get("rate_limits"), "", rates, problems, "common_site_config.json")
    for site in bench.sites():
        try:
            conf = bench.site_config(site)
        except Exception as exc:  # an unreadable site config fails that site's jobs, not the worker
            problems.append(f"{site}: {exc}")
            continue
        if "queue_weight" in conf:
            weight = _weight(conf["queue_weight"])
            if weight is None:
                problems.append(f"{site}: queue_weight must be a number above 0")
            elif weight != 1:
                for q in queues:
                    per_queue[q][f"w:{site}"] = repr(weight)
        caps = conf.get("queue_max_running") or {}
        if not isinstance(caps, dict):
            problems.append(f"{site}: queue_max_running must be an object like {{\"default\": 2}}")
            caps = {}
        for q, cap in caps.items():
            if not isinstance(cap, int) or isinstance(cap, bool) or cap < 0:
                problems.append(f"{site}: queue_max_running.{q} must be a whole number")
            elif q in per_queue:
                per_queue[q][f"c:{site}"] = str(cap)
        _rates(conf.get("rate_limits"), f"{site}{FIELD_SEP}", rates, problems, site)
    return per_queue, rates, problems


def _rates(value: Any, prefix: str, out: dict[str, str], problems: list[str], where: str) -> None:
    if value is None:
        return
    if not isinstance(value, dict):
        problems.append(f"{where}: rate_limits must be an object like {{\"myapp.api.sync\": \"10/s\"}}")
        return
    for method, text in value.items():
        try:
            out[f"{prefix}{method}"] = f"{parse_rate(text):.3f}"
        except ValidationError as exc:
            problems.append(f"{where}: {method}: {exc}")


def sync_policy(r: redis.Redis, keys: Keys, bench: Bench, queues: Iterable[str]) -> list[str]:
    """Write weights, caps and rate limits to Redis (one MULTI), with the rate limits declared by
    decorated functions this process imported; returns the config problems skipped."""
    queues = list(queues)
    per_queue, rates, problems = desired(bench, queues)
    pipe = r.pipeline(transaction=False)
    for q in queues:
        pipe.hkeys(keys.fair(q))
    pipe.hkeys(keys.rates)
    *current, rate_fields = pipe.execute()
    pipe = r.pipeline(transaction=True)
    for q, fields in zip(queues, current, strict=True):
        names = {_text(f) for f in fields}
        stale = [f for f in names if f.startswith(("w:", "c:")) and f not in per_queue[q]]
        if stale:
            pipe.hdel(keys.fair(q), *stale)
        if per_queue[q]:
            pipe.hset(keys.fair(q), mapping=per_queue[q])  # type: ignore[arg-type]
    # config fields no longer in the config go; decorators' fields (\x1e...) are not config's
    stale_rates = [f for f in map(_text, rate_fields) if not f.startswith(RATE_DECLARED) and f not in rates]
    if stale_rates:
        pipe.hdel(keys.rates, *stale_rates)
    rates.update(declared_fields())
    if rates:
        pipe.hset(keys.rates, mapping=rates)  # type: ignore[arg-type]
    pipe.execute()
    return problems


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def policy(r: redis.Redis, keys: Keys, queues: Iterable[str]) -> dict[str, dict[str, dict[str, Any]]]:
    """queue -> site -> {weight, cap, running, paused} for every site with a setting or running jobs."""
    queues = list(queues)
    pipe = r.pipeline(transaction=False)
    for q in queues:
        pipe.hgetall(keys.fair(q)).hgetall(keys.running(q))
    replies = pipe.execute()
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for i, q in enumerate(queues):
        fair, running = replies[2 * i], replies[2 * i + 1]
        sites: dict[str, dict[str, Any]] = {}
        for raw, value in fair.items():
            name = raw.decode()
            kind, _, site = name.partition(":")
            if not site:
                continue
            row = sites.setdefault(site, {"weight": 1.0, "cap": None, "running": 0, "paused": False})
            if kind == "w":
                row["weight"] = float(value)
            elif kind == "c":
                row["cap"] = int(value)
            elif kind == "p":
                row["paused"] = True
        for raw, value in running.items():
            row = sites.setdefault(raw.decode(), {"weight": 1.0, "cap": None, "running": 0, "paused": False})
            row["running"] = int(value)
        out[q] = sites
    return out
