"""The private parts of Celery, kombu, billiard, RedBeat and redis-py that benchcelery relies on.

Our subclasses override private methods and read private attributes of these libraries (the
transport's poll, the prefork pool's writer, the event heartbeat, the raw replies of a pipeline).
None of that fails loudly when a release renames it: an override of a method that no longer exists
is never called, and ``getattr(obj, name, default)`` quietly returns the default. So ``bench
worker`` and ``bench schedule`` check every name listed here before they start (``require``) and
stop with one line naming the first missing one and the versions installed;
``tests/test_internals.py`` runs the same check.

How a name is checked (``Internal.kind``):

- ``CLASS``: ``hasattr`` on the owner (a class or a module): methods, properties, class attributes,
  ``__slots__`` and cached properties.
- ``SELF``: an instance attribute that exists only once an instance is set up. The source of the
  owner or one of its bases must assign ``self.<name>`` (``inspect.getsource`` over the MRO).
  Building an instance instead would need a broker connection, a pool of processes or an app.
- ``ITEM``: the owner's attribute is a container that must hold ``item`` (a bootstep named by a
  string, a remote-control command we wrap).

Names with a public equivalent are not listed: the code uses the public one.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from benchcelery.errors import BenchError

CLASS, SELF, ITEM = "class", "self", "item"

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


def _names(owner: str, names: str, used_in: str, kind: str = CLASS) -> list[Internal]:
    return [Internal(owner, name, used_in, kind) for name in names.split()]


_REDIS_CHANNEL = "kombu.transport.redis:Channel"
_TRANSPORT = "broker/transport.py"


INTERNALS: list[Internal] = [
    # --- kombu: the Redis transport (broker/transport.py, broker/sentinel_transport.py) ---
    *_names(
        "kombu.transport.redis:QoS",
        "append ack reject restore_unacked restore_visible",
        f"{_TRANSPORT} QoS (overrides)",
    ),
    Internal("kombu.transport.redis:QoS", "_delivered", f"{_TRANSPORT} QoS.restore_unacked"),
    *_names("kombu.transport.virtual:QoS", "append ack", f"{_TRANSPORT} QoS (called past kombu's Redis QoS)"),
    *_names(
        _REDIS_CHANNEL,
        "conn_or_acquire _put _purge basic_consume _brpop_start _brpop_read _get close _restore",
        f"{_TRANSPORT} Channel (overrides)",
    ),
    *_names(
        _REDIS_CHANNEL,
        "_pool _create_client _q_for_pri _get_message_priority _in_poll _brpop_sent_at _closing "
        "_flush_brpop_reauth from_transport_options",
        f"{_TRANSPORT} Channel",
    ),
    Internal(_REDIS_CHANNEL, "_queue_cycle", f"{_TRANSPORT} Channel._brpop_start/_brpop_read", SELF),
    Internal(_REDIS_CHANNEL, "ResponseError", f"{_TRANSPORT} Channel._brpop_read", SELF),
    Internal("kombu.transport.redis:SentinelChannel", "_get_pool", "broker/sentinel_transport.py (override)"),
    Internal("kombu.transport.redis:Transport", "_deliver", f"{_TRANSPORT} Channel._deliver_taken"),
    Internal("kombu.transport.redis", "Empty", f"{_TRANSPORT} Channel._brpop_read/_get"),
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
    # --- redis-py: raw pipelines (store/durable.py, jobs/bulk.py, broker/transport.py) ---
    Internal("redis.client:Pipeline", "command_stack", "store/durable.py execute_push", SELF),
    Internal("redis.connection:Connection", "_parser", "jobs/bulk.py _send", SELF),
    Internal("redis.connection:DefaultParser", "read_response", "jobs/bulk.py _send (conn._parser)"),
    Internal("redis.client:Redis", "parse_response", f"{_TRANSPORT} Channel._brpop_read"),
]


def _resolve(owner: str) -> Any:
    """The object ``module:Qual.Name`` names; raises ImportError/AttributeError when it is gone."""
    module, _, qualname = owner.partition(":")
    obj: Any = importlib.import_module(module)
    for part in filter(None, qualname.split(".")):
        obj = getattr(obj, part)
    return obj


def _assigns(cls: type, name: str) -> bool:
    """Whether the source of ``cls`` or of one of its bases assigns ``self.<name>`` (alone or in a
    tuple of self attributes, with or without an annotation)."""
    attr = r"self\.\w+"
    pattern = re.compile(
        rf"^\s*(?:{attr}\s*,\s*)*self\.{re.escape(name)}\b(?:\s*,\s*{attr})*\s*(?::[^=\n]*)?=(?!=)", re.MULTILINE
    )
    return any(pattern.search(_source(klass)) for klass in inspect.getmro(cls) if klass.__module__ != "builtins")


@functools.cache
def _source(klass: type) -> str:
    """The sources of the functions ``klass`` defines (methods, properties, static and class
    methods): where ``self.<name>`` is assigned. Function by function, as whole-class lookup parses
    the whole module and fails for Celery's bootsteps (their metaclass renames ``__qualname__``)."""
    parts = []
    for value in vars(klass).values():
        function = getattr(value, "__func__", None) or getattr(value, "fget", None) or value
        if inspect.isfunction(function):
            try:
                parts.append(inspect.getsource(function))
            except (OSError, TypeError):
                continue
    return "\n".join(parts)


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


def check(internals: Iterable[Internal] | None = None) -> list[str]:
    """One line per private name that is missing from the installed libraries (empty: all there)."""
    listed = INTERNALS if internals is None else internals
    missing = [(i.label, i.module.split(".")[0]) for i in listed if not _present(i)]
    if not _redbeat_meta_form():
        missing.append(("RedBeat's meta JSON datetime form (scheduler/schedules.py)", "redbeat"))
    installed = versions() if missing else {}
    return [_line(what, top, installed) for what, top in missing]


class InternalsChanged(BenchError):
    """An installed Celery/kombu/billiard/RedBeat/redis-py lacks a private name benchcelery relies on."""


def require() -> None:
    """Start-up check of ``bench worker`` and ``bench schedule``: raise InternalsChanged (one line,
    exit 1) naming the first missing name when any is missing."""
    problems = check()
    if problems:
        more = f" [and {len(problems) - 1} more]" if len(problems) > 1 else ""
        raise InternalsChanged(problems[0] + more)
