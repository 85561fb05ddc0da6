"""The private parts of Celery, kombu, billiard, RedBeat and redis-py that benchcelery relies on.

Our subclasses override private methods and read private attributes of these libraries (the
transport's poll, the prefork pool's writer, the event heartbeat, the raw replies of a pipeline).
None of that fails loudly when a release renames it: an override of a method that no longer exists
is never called, and ``getattr(obj, name, default)`` quietly returns the default. So ``bench
schedule`` checks every name listed here before it starts (``require``), and ``bench worker`` and
``worker-pool`` every name but the scheduler's own (celery beat, RedBeat: ``used_in`` under
``scheduler/``; a worker never imports those modules, and importing them cost it ~15 ms at each
start); they stop with one line naming the first missing one and the versions installed.
``tests/test_internals.py`` checks the whole list.

How a name is checked (``Internal.kind``):

- ``CLASS``: ``hasattr`` on the owner (a class or a module): methods, properties, class attributes,
  ``__slots__`` and cached properties.
- ``SELF``: an instance attribute that exists only once an instance is set up. A function of the
  owner or of one of its bases must assign ``self.<name>`` (read from their compiled code: a
  ``STORE_ATTR <name>`` on ``self``, in the function or a function nested in it; reading their
  source instead tokenised some 300 functions, ~80 ms of every start). Building an instance
  instead would need a broker connection, a pool of processes or an app.
- ``ITEM``: the owner's attribute is a container that must hold ``item`` (a bootstep named by a
  string, a remote-control command we wrap).

Names with a public equivalent are not listed: the code uses the public one.
"""

from __future__ import annotations

import dis
import functools
import importlib
import inspect
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from types import CodeType
from typing import Any

from benchcelery.errors import BenchError

CLASS, SELF, ITEM = "class", "self", "item"
WORKER, SCHEDULER = "worker", "schedule"  # the processes that check at start (require)

# Top-level module -> (distribution, the name shown in the error line).
PACKAGES = {
    "kombu": ("kombu", "kombu"),
    "celery": ("celery", "celery"),
    "billiard": ("billiard", "billiard"),
    "redis": ("redis", "redis-py"),
    "redbeat": ("celery-redbeat", "celery-redbeat"),
}


@dataclass(frozen=True)
class Internal:
    """``owner`` is ``module:Qualified.Name`` (or a bare module); ``used_in`` says where we rely on it."""

    owner: str
    name: str
    used_in: str
    kind: str = CLASS
    item: str = ""

    @property
    def label(self) -> str:
        owner = self.owner.replace(":", ".")
        return f"{self.item!r} in {owner}.{self.name}" if self.kind == ITEM else f"{owner}.{self.name}"

    @property
    def module(self) -> str:
        return self.owner.partition(":")[0]

    @property
    def scheduler_only(self) -> bool:
        """Relied on by the scheduler alone (celery beat, RedBeat): a worker never imports it."""
        return self.used_in.startswith("scheduler/")


def _names(owner: str, names: str, used_in: str, kind: str = CLASS) -> list[Internal]:
    return [Internal(owner, name, used_in, kind) for name in names.split()]


_REDIS_CHANNEL = "kombu.transport.redis:Channel"
_TRANSPORT = "broker/transport.py"
_POLL = "broker/poll.py"
_SITE_LISTS = "broker/sitelists.py"
_QOS = "broker/qos.py"


INTERNALS: list[Internal] = [
    # --- kombu: the Redis transport (broker/transport.py and its mixins, qos.py, sentinel_transport.py) ---
    *_names(
        "kombu.transport.redis:QoS",
        "append ack reject restore_unacked restore_visible",
        f"{_QOS} QoS (overrides)",
    ),
    Internal("kombu.transport.redis:QoS", "_delivered", f"{_QOS} QoS.restore_unacked"),
    *_names("kombu.transport.virtual:QoS", "append ack", f"{_QOS} QoS (called past kombu's Redis QoS)"),
    *_names(_REDIS_CHANNEL, "conn_or_acquire basic_consume close _restore", f"{_TRANSPORT} Channel (overrides)"),
    *_names(_REDIS_CHANNEL, "_put _size _purge basic_consume", f"{_SITE_LISTS} SiteLists (overrides)"),
    *_names(_REDIS_CHANNEL, "_brpop_start _brpop_read _get", f"{_POLL} Poll (overrides)"),
    *_names(
        _REDIS_CHANNEL,
        "_pool _create_client _q_for_pri _get_message_priority _in_poll _brpop_sent_at _closing "
        "_flush_brpop_reauth from_transport_options",
        f"{_TRANSPORT} Channel, {_POLL}, {_SITE_LISTS}",
    ),
    Internal(_REDIS_CHANNEL, "_queue_cycle", f"{_POLL} Poll._brpop_start/_brpop_read", SELF),
    Internal(_REDIS_CHANNEL, "ResponseError", f"{_POLL} Poll._brpop_read, {_SITE_LISTS} SiteLists._adopt", SELF),
    Internal("kombu.transport.redis:SentinelChannel", "_get_pool", "broker/sentinel_transport.py (override)"),
    Internal("kombu.transport.redis:Transport", "_deliver", f"{_POLL} Poll._deliver_taken"),
    Internal("kombu.transport.redis", "Empty", f"{_POLL} Poll._brpop_read/_get"),
    Internal("kombu.transport", "_transport_cache", "broker/celery_app.py register_transport"),
    Internal("kombu.transport", "TRANSPORT_ALIASES", "broker/celery_app.py register_transport"),
    *_names(
        "kombu.utils.scheduling:round_robin_cycle", "consume rotate", "worker/strategy.py random_cycle (overrides)"
    ),
    Internal("kombu.utils.scheduling:round_robin_cycle", "items", "worker/strategy.py random_cycle.consume", SELF),
    # --- kombu: the event loop and messages (worker/) ---
    Internal("kombu.message:Message", "_state", "worker/lookahead.py Lookahead._give_back"),
    *_names("kombu.common:QoS", "increment_eventually decrement_eventually update", "worker/lookahead.py Lookahead"),
    Internal("kombu.asynchronous.semaphore:LaxBoundedSemaphore", "_waiting", "worker/lookahead.py", SELF),
    *_names("kombu.asynchronous.hub:Hub", "readers writers consolidate consolidate_callback", "worker/pool.py", SELF),
    # --- Celery: the prefork pool (worker/pool.py, worker/burst.py) ---
    Internal("celery.concurrency.asynpool:AsynPool", "_create_write_handlers", "worker/pool.py AsynPool (override)"),
    *_names(
        "celery.concurrency.asynpool:AsynPool",
        "on_poll_start outbound_buffer _all_inqueues _active_writes sched_strategy _quick_put",
        "worker/pool.py AsynPool._create_write_handlers",
        SELF,
    ),
    Internal("celery.concurrency.asynpool", "SCHED_STRATEGY_FAIR", "worker/pool.py"),
    Internal("celery.concurrency.prefork:TaskPool", "Pool", "worker/pool.py TaskPool"),
    *_names("celery.concurrency.prefork:TaskPool", "_pool on_stop on_terminate", "worker/burst.py _stop_idle_pool"),
    Internal("billiard.pool:Pool", "_pool", "worker/burst.py _stop_idle_pool (pool._pool._pool)", SELF),
    # broker/pollcycle.py: kombu's per-turn socket registration, replaced (found by its qualified name).
    *_names("kombu.asynchronous.hub:Hub", "on_tick", "broker/pollcycle.py register_quietly", SELF),
    Internal("kombu.transport.redis:Transport", "cycle", "broker/pollcycle.py register_quietly"),
    *_names("kombu.transport.redis:MultiChannelPoller", "on_poll_start fds", "broker/pollcycle.py register_quietly"),
    # --pool solo (worker/solo.py): the job runs through our on_apply; a terminate is refused.
    Internal("celery.concurrency.base", "apply_target", "worker/solo.py TaskPool._apply"),
    Internal("celery.concurrency.solo:TaskPool", "on_apply", "worker/solo.py TaskPool (replaced)", SELF),
    *_names("celery.concurrency.solo:TaskPool", "terminate_job _get_info", "worker/solo.py TaskPool (override)"),
    # --- Celery: the worker, its consumer and steps (worker/, jobs/execute.py) ---
    *_names(
        "celery.worker.consumer:Consumer",
        "on_decode_error on_unknown_task on_invalid_task max_prefetch_count",
        "worker/consumer.py Consumer (overrides)",
    ),
    Internal(
        "celery.worker.consumer:Consumer.Blueprint",
        "default_steps",
        "worker/consumer.py Consumer.Blueprint (replaces Celery's Heart)",
        ITEM,
        "celery.worker.consumer.heart:Heart",
    ),
    Internal("celery.worker.consumer.heart:Heart", "start", "worker/events.py Heart (override)"),
    Internal("celery.worker.consumer.heart:Heart", "heartbeat_interval", "worker/events.py Heart.start", SELF),
    Internal("celery.worker.heartbeat:Heart", "_send", "worker/events.py GatedHeart (override)"),
    Internal("celery.worker.heartbeat:Heart", "eventer", "worker/events.py GatedHeart._send", SELF),
    Internal("celery.worker.control:Panel", "data", "worker/events.py install_control_answers", ITEM, "rate_limit"),
    Internal("celery.worker.control:Panel", "data", "worker/events.py install_control_answers", ITEM, "time_limit"),
    Internal("celery.worker.control", "nok", "worker/events.py"),
    *_names(
        "celery.apps.worker",
        "_shutdown_handler install_worker_term_hard_handler safe_say",
        "worker/__init__.py _second_term_is_cold",
    ),
    *_names("celery.apps.worker:Worker", "install_platform_tweaks set_process_status", "worker/__init__.py (replaced)"),
    Internal("celery.worker.worker:WorkController", "semaphore", "worker/lookahead.py"),
    *_names(
        "celery.worker.state",
        "active_requests reserved_requests should_stop should_terminate all_total_count task_ready",
        "worker/ (burst, lookahead, heartbeat), broker/transport.py, jobs/execute.py",
    ),
    Internal("celery.worker.components", "Pool", "worker/heartbeat.py Heartbeat.requires"),
    Internal("celery.worker.consumer.tasks", "Tasks", "worker/periodic.py Periodic.requires"),
    *_names(
        "celery.worker.request:Request",
        "terminate send_event on_timeout on_failure",
        "jobs/execute.py JobRequest (overrides)",
    ),
    *_names("celery.worker.request:Request", "_request_dict _context", "jobs/execute.py JobRequest"),
    # --- Celery beat, RedBeat (scheduler/) ---
    Internal("celery.apps.beat:Beat", "set_process_title", "scheduler/beat.py run_beat (replaced)"),
    *_names(
        "celery.schedules:BaseSchedule", "remaining_estimate is_due", "scheduler/schedules.py CronSchedule (overrides)"
    ),
    *_names(
        "redbeat.schedulers:RedBeatScheduler", "setup_schedule tick close", "scheduler/beat.py Scheduler (overrides)"
    ),
    *_names("redbeat.schedulers:RedBeatScheduler", "lock lock_timeout Entry", "scheduler/beat.py Scheduler"),
    Internal("redbeat.schedulers:RedBeatScheduler", "lock_key", "scheduler/beat.py Scheduler", SELF),
    *_names(
        "redbeat.schedulers:RedBeatSchedulerEntry",
        "decode_definition due_at save",
        "scheduler/schedules.py Entry (overrides)",
    ),
    *_names("redbeat.schedulers:RedBeatSchedulerEntry", "key score", "scheduler/schedules.py Entry.save"),
    Internal("redbeat.schedulers", "get_redis", "scheduler/schedules.py Entry.save"),
    Internal("redbeat.schedulers:RedBeatConfig", "schedule_key", "scheduler/schedules.py Entry.save", SELF),
    Internal("redbeat.decoder:RedBeatJSONEncoder", "default", "scheduler/schedules.py Encoder (override)"),
    Internal("redbeat.decoder:RedBeatJSONDecoder", "dict_to_object", "scheduler/schedules.py Decoder (override)"),
    # --- redis-py: raw pipelines (store/durable.py, jobs/bulk.py, broker/poll.py) ---
    Internal("redis.client:Pipeline", "command_stack", "store/durable.py execute_push", SELF),
    Internal("redis.connection:Connection", "_parser", "jobs/bulk.py _send", SELF),
    Internal("redis.connection:Connection", "_sock", "jobs/bulk.py _write", SELF),
    Internal("redis._parsers.hiredis:_HiredisParser", "_reader", "jobs/bulk.py _reader_gets", SELF),
    Internal("redis.connection:DefaultParser", "read_response", "jobs/bulk.py _send (conn._parser)"),
    Internal("redis.client:Redis", "parse_response", f"{_POLL} Poll._brpop_read"),
]


def _resolve(owner: str) -> Any:
    """The object ``module:Qual.Name`` names; raises ImportError/AttributeError when it is gone."""
    module, _, qualname = owner.partition(":")
    obj: Any = importlib.import_module(module)
    for part in filter(None, qualname.split(".")):
        obj = getattr(obj, part)
    return obj


def _assigns(cls: type, name: str) -> bool:
    """Whether a function of ``cls`` or of one of its bases assigns ``self.<name>`` (alone, in a
    tuple of targets, with or without an annotation; also in a function nested in it)."""
    return any(
        _stores(code, _mangled(klass, name))
        for klass in inspect.getmro(cls)
        if klass.__module__ != "builtins"
        for code in _codes(klass)
    )


def _mangled(klass: type, name: str) -> str:
    """``name`` as the compiler stores it in the functions of ``klass`` (``self.__x`` is ``_K__x``)."""
    if name.startswith("__") and not name.endswith("__") and klass.__name__.strip("_"):
        return f"_{klass.__name__.lstrip('_')}{name}"
    return name


@functools.cache
def _codes(klass: type) -> tuple[CodeType, ...]:
    """The code of the functions ``klass`` defines (methods, properties, static and class methods,
    unwrapped from decorators) and of the functions nested in them."""
    found: list[CodeType] = []
    for value in vars(klass).values():
        function = getattr(value, "__func__", None) or getattr(value, "fget", None) or value
        if hasattr(function, "__wrapped__"):
            function = inspect.unwrap(function)
        if inspect.isfunction(function):
            found += _nested(function.__code__)
    return tuple(found)


def _nested(code: CodeType) -> Iterator[CodeType]:
    yield code
    for const in code.co_consts:
        if isinstance(const, CodeType):
            yield from _nested(const)


_STORE_ATTR = dis.opmap["STORE_ATTR"]
_EXTENDED_ARG = dis.opmap["EXTENDED_ARG"]
_CACHE = dis.opmap.get("CACHE", -1)
# Loads of one local or free variable; from Python 3.13 also paired loads (the low 4 bits of the
# argument are the second variable, the one loaded last).
_LOAD_ONE = {dis.opmap[n] for n in ("LOAD_FAST", "LOAD_FAST_CHECK", "LOAD_FAST_BORROW", "LOAD_DEREF") if n in dis.opmap}
_LOAD_PAIR = {dis.opmap[n] for n in ("LOAD_FAST_LOAD_FAST", "LOAD_FAST_BORROW_LOAD_FAST_BORROW") if n in dis.opmap}


def _stores(code: CodeType, name: str) -> bool:
    """Whether ``code`` stores attribute ``name`` on ``self``."""
    return name in code.co_names and name in _stored_on_self(code)  # not mentioned: nothing to read


@functools.cache
def _stored_on_self(code: CodeType) -> frozenset[str]:
    """The attributes ``code`` stores on ``self``: a STORE_ATTR right after the load of ``self``.
    Read from the raw instructions (two bytes each, inline caches as CACHE units): what
    ``dis.get_instructions`` gives, at a tenth of its cost on the large ``__init__`` methods."""
    raw, names = code.co_code, code.co_names
    # The variables LOAD_FAST/LOAD_DEREF index: locals, then cells that are not locals, then frees.
    local = (*code.co_varnames, *(c for c in code.co_cellvars if c not in code.co_varnames), *code.co_freevars)
    stored: set[str] = set()
    extended, load = 0, -1  # load: the variable the previous instruction loaded (-1: not a load)
    for offset in range(0, len(raw), 2):
        op, arg = raw[offset], raw[offset + 1] | extended
        if op == _EXTENDED_ARG:
            extended = arg << 8
            continue
        extended = 0
        if op == _CACHE:
            continue
        if op == _STORE_ATTR and 0 <= load < len(local) and local[load] == "self":
            stored.add(names[arg])
        load = arg if op in _LOAD_ONE else arg & 15 if op in _LOAD_PAIR else -1
    return frozenset(stored)


def _present(internal: Internal) -> bool:
    try:
        owner = _resolve(internal.owner)
    except (ImportError, AttributeError):
        return False
    if internal.kind == SELF:
        return isinstance(owner, type) and (hasattr(owner, internal.name) or _assigns(owner, internal.name))
    if internal.kind == ITEM:
        container = getattr(owner, internal.name, None)
        try:
            return container is not None and internal.item in container
        except TypeError:
            return False
    return hasattr(owner, internal.name)


def versions() -> dict[str, str]:
    """Installed version of each library checked here, by the name shown in the error line."""
    found = {}
    for dist, shown in PACKAGES.values():
        try:
            found[shown] = version(dist)
        except PackageNotFoundError:
            found[shown] = "not installed"
    return found


def _line(what: str, top: str, installed: dict[str, str]) -> str:
    shown = PACKAGES.get(top, (top, top))[1]
    others = ", ".join(f"{name} {v}" for name, v in installed.items() if name != shown)
    return f"benchcelery needs {what}, missing in {shown} {installed.get(shown, '?')} ({others})"


def _redbeat_meta_form() -> bool:
    """scheduler/schedules.py reads and writes RedBeat's ``meta`` JSON itself (a datetime is
    ``{"__type__": "datetime", "year": ..., "timezone": ...}``): RedBeat must still write that form."""
    try:
        from redbeat.decoder import RedBeatJSONEncoder

        when = datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=UTC)
        text = json.dumps({"last_run_at": when, "total_run_count": 0}, cls=RedBeatJSONEncoder)
        value = json.loads(text)["last_run_at"]
    except Exception:
        return False
    fields = ("year", "month", "day", "hour", "minute", "second", "microsecond")
    return (
        isinstance(value, dict)
        and value.get("__type__") == "datetime"
        and [value.get(f) for f in fields] == [2024, 1, 2, 3, 4, 5, 6]
        and "timezone" in value
    )


def check(internals: Iterable[Internal] | None = None, process: str = SCHEDULER) -> list[str]:
    """One line per private name that is missing from the installed libraries (empty: all there).
    ``process``: SCHEDULER checks the whole list (the default), WORKER all but the scheduler's own."""
    listed = INTERNALS if internals is None else internals
    if process == WORKER:
        listed = [i for i in listed if not i.scheduler_only]
    missing = [(i.label, i.module.split(".")[0]) for i in listed if not _present(i)]
    if process != WORKER and not _redbeat_meta_form():
        missing.append(("RedBeat's meta JSON datetime form (scheduler/schedules.py)", "redbeat"))
    installed = versions() if missing else {}
    return [_line(what, top, installed) for what, top in missing]


class InternalsChanged(BenchError):
    """An installed Celery/kombu/billiard/RedBeat/redis-py lacks a private name benchcelery relies on."""


def require(process: str) -> None:
    """Start-up check of ``bench worker``/``worker-pool`` (WORKER) and ``bench schedule``
    (SCHEDULER): raise InternalsChanged (one line, exit 1) naming the first missing name when any
    is missing."""
    problems = check(process=process)
    if problems:
        more = f" [and {len(problems) - 1} more]" if len(problems) > 1 else ""
        raise InternalsChanged(problems[0] + more)
