"""``benchcelery.rate_limit``: an app declares, next to a job function, how often it may start.

::

    import benchcelery

    @benchcelery.rate_limit("10/s")                 # all sites together: 10 starts a second
    def sync(doc): ...

    @benchcelery.rate_limit("30/m", per_site=True)  # each site: 30 starts a minute
    def pull(source): ...

The limit is the same one ``rate_limits`` in the config sets (units ``/s``, ``/m``, ``/h``; GCRA
per method, or per site and method, in broker/lua/fetch.lua): global across every worker and
host, and a held-back job waits in its queue, holding no worker process.

The fetch script decides before any worker imports the method, so the limit must be in Redis
first. Decorating writes nothing (no Redis at import); the limit is written into the ``rates``
hash (``\\x1e<method>``, bench/keys.py) by:

- **every enqueue of the method** (``enqueue``, ``enqueue_many``, ``bench enqueue``, the scheduler:
  in the same MULTI as the job's message; ``enqueue_in``/``enqueue_at``: just before the job is
  stored). So a job enqueued by code that has the decorator is limited from its first fetch on.
- **a worker process that imported the function**: a pool process before it runs the first job
  of a module it imported (jobs/execute.py), the worker's main process at start and every
  POLICY_INTERVAL seconds (worker/fairness.py, when it imported such modules, e.g. ``--pool
  solo``). This covers jobs enqueued by code older than the decorator: they are limited from
  the first such job's start on (the jobs its worker holds ahead, if any, were taken already: one,
  or up to 7 of a batch of short jobs).

Config wins: a ``rate_limits`` entry for the method in ``common_site_config.json`` replaces the
decorator's limit (whole bench and per site); a site's own entry replaces the per-site limit of
the decorator for that site (and adds to a whole-bench one, as it does alone). A changed
decorator holds from the next enqueue (or worker start) with the new code; a removed one stops
holding from the first enqueue of the method by a process whose code no longer has it.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from benchcelery.bench.keys import RATE_DECLARED
from benchcelery.bench.schema import parse_rate
from benchcelery.errors import ValidationError

if TYPE_CHECKING:
    import redis

    from benchcelery.bench.keys import Keys

F = TypeVar("F", bound=Callable[..., Any])
ATTR = "__benchcelery_rate_limit__"
MAX_CLEARED = 4096  # undecorated methods this process cleared a stale declaration of


@dataclass(frozen=True)
class RateLimit:
    rate: str  # as written: "10/s"
    interval_ms: float  # ms between two starts
    per_site: bool

    @property
    def value(self) -> str:
        """The ``rates`` hash value fetch.lua reads: ``<ms>`` (whole bench) or ``s<ms>`` (per site)."""
        return f"{'s' if self.per_site else ''}{self.interval_ms:.3f}"


# method path -> limit of every decorated function defined in this process (modules it imported),
# and those not yet written by this process (a pool process writes them before its next job).
declared: dict[str, RateLimit] = {}
unpublished: dict[str, RateLimit] = {}
_cleared: set[tuple[str, str]] = set()  # (rates key, method): a bench's stale declaration cleared
_lock = threading.Lock()


def rate_limit(rate: str, per_site: bool = False) -> Callable[[F], F]:
    """Limit how often the decorated job function starts: ``rate`` is ``"<n>/s"``, ``"/m"`` or
    ``"/h"``, for the whole bench, or for each site with ``per_site``. Returns the function itself
    (only marked), so it stays what the allowlist admits. Raises ValidationError for a bad rate
    (when the app's module is imported) or when applied to something that is not a function.
    When the limit starts holding: this module's docstring."""
    limit = RateLimit(rate, parse_rate(rate), bool(per_site))

    def mark(fn: F) -> F:
        if not inspect.isfunction(fn):
            raise ValidationError(f"rate_limit applies to a job function, not {type(fn).__name__}")
        setattr(fn, ATTR, limit)
        name = f"{fn.__module__}.{fn.__qualname__}"
        if "<" not in name:  # a nested function is no job method (jobs/methods.py method_name)
            with _lock:
                declared[name] = limit
                unpublished[name] = limit
        return fn

    return mark


def limit_of(fn: Any) -> RateLimit | None:
    """The decorator's limit of a job function, or None."""
    limit = getattr(fn, ATTR, None)
    return limit if isinstance(limit, RateLimit) else None


def field(method: str) -> str:
    return f"{RATE_DECLARED}{method}"


def commands(rates: str, methods: dict[str, RateLimit | None]) -> list[tuple[str, ...]]:
    """The writes that put enqueued methods' declarations in the ``rates`` hash (key ``rates``):
    ``("HSET", field, value)`` for a decorated method, each time (the write is idempotent and a
    few µs); ``("HDEL", field)`` for an undecorated one (a stale declaration of code that had the
    decorator) until ``written`` says this process's HDEL of it went through."""
    out: list[tuple[str, ...]] = []
    for method, limit in methods.items():
        if limit is not None:
            out.append(("HSET", rates, field(method), limit.value))
        elif (rates, method) not in _cleared:
            out.append(("HDEL", rates, field(method)))
    return out


def written(rates: str, methods: dict[str, RateLimit | None]) -> None:
    """After ``commands(rates, methods)`` were applied: the undecorated ones need no HDEL again."""
    for method, limit in methods.items():
        if limit is None and (rates, method) not in _cleared:
            if len(_cleared) >= MAX_CLEARED:
                _cleared.clear()
            _cleared.add((rates, method))


def write(r: redis.Redis, keys: Keys, methods: dict[str, RateLimit | None]) -> None:
    """``commands`` in one round trip of their own (enqueue_in/enqueue_at, before the job is stored)."""
    todo = commands(keys.rates, methods)
    if not todo:
        return
    pipe = r.pipeline(transaction=False)
    for command in todo:
        pipe.execute_command(*command)
    pipe.execute()
    written(keys.rates, methods)


def publish_new(r: redis.Redis, keys: Keys) -> None:
    """Write the declarations of functions this process imported since its last call (a pool
    process, before a job: one round trip the first time a module with decorated functions is
    imported, nothing after). Raises Redis errors (the caller's to log); the limits stay to write."""
    with _lock:
        todo = dict(unpublished)
    if not todo:
        return
    r.hset(keys.rates, mapping={field(m): limit.value for m, limit in todo.items()})  # type: ignore[arg-type]
    with _lock:
        for method, limit in todo.items():
            if unpublished.get(method) is limit:
                del unpublished[method]


def declared_fields() -> dict[str, str]:
    """``rates`` fields -> values of every decorated function this process imported (worker sync)."""
    with _lock:
        return {field(m): limit.value for m, limit in declared.items()}
