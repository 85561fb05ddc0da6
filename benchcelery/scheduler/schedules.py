"""Our RedBeat entry format: a croniter-based cron schedule, its JSON encoding, and the entry class.

RedBeat stores each entry as a hash (``definition``, ``meta``) plus a zset score (the next due time).
Celery's ``crontab`` cannot parse Frappe's cron syntax (``0/15``, ``@daily``, a seconds field) and
RedBeat encodes it without a time zone, so cron entries use ``CronSchedule`` (``__type__``
``bc_cron``, with the expression and the bench time zone); ``all`` entries use Celery's interval
``schedule``, which RedBeat encodes natively.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from celery.schedules import BaseSchedule, schedstate
from celery.schedules import schedule as interval_schedule
from redbeat.decoder import RedBeatJSONDecoder, RedBeatJSONEncoder
from redbeat.schedulers import RedBeatSchedulerEntry

from benchcelery.scheduler.events import cron_next

CRON_TYPE = "bc_cron"


def zone(name: str | None) -> ZoneInfo:
    """The ZoneInfo for a ``time_zone`` config value; raises ValueError for an unknown zone."""
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"Unknown time_zone {name!r}") from None


class CronSchedule(BaseSchedule):
    """A croniter expression evaluated in a fixed time zone (the bench's ``time_zone``)."""

    def __init__(self, expr: str, tz_name: str = "UTC", nowfun: Any = None, app: Any = None) -> None:
        super().__init__(nowfun=nowfun, app=app)
        self.expr = expr
        self.tz_name = tz_name
        self.zone = zone(tz_name)

    def next_after(self, last_run_at: datetime) -> datetime:
        return cron_next(self.expr, self.maybe_make_aware(last_run_at), self.zone)

    def remaining_estimate(self, last_run_at: datetime) -> timedelta:
        return self.next_after(last_run_at) - self.maybe_make_aware(self.now())

    def is_due(self, last_run_at: datetime) -> schedstate:
        now = self.maybe_make_aware(self.now())
        upcoming = self.next_after(last_run_at)
        if upcoming <= now:
            return schedstate(True, (self.next_after(now) - now).total_seconds())
        return schedstate(False, (upcoming - now).total_seconds())

    def __repr__(self) -> str:
        return f"<cron: {self.expr} ({self.tz_name})>"

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, CronSchedule) and (other.expr, other.tz_name) == (self.expr, self.tz_name)

    def __hash__(self) -> int:
        return hash((self.expr, self.tz_name))

    def __reduce__(self) -> Any:
        return self.__class__, (self.expr, self.tz_name, self.nowfun)


def encode_schedule(cron: str | None, interval: float, tz_name: str) -> dict[str, Any]:
    """The JSON form of a job's schedule (what ``Encoder`` writes for the schedule objects)."""
    if cron is None:
        return {"__type__": "interval", "every": float(interval), "relative": False}
    return {"__type__": CRON_TYPE, "expr": cron, "tz": tz_name}


class Encoder(RedBeatJSONEncoder):
    def default(self, obj: Any) -> Any:
        if isinstance(obj, CronSchedule):
            return {"__type__": CRON_TYPE, "expr": obj.expr, "tz": obj.tz_name}
        return super().default(obj)


class Decoder(RedBeatJSONDecoder):
    def dict_to_object(self, d: dict[str, Any]) -> Any:
        if d.get("__type__") == CRON_TYPE:
            return CronSchedule(d["expr"], d.get("tz") or "UTC")
        return super().dict_to_object(d)


def encode_meta(last_run_at: datetime, total_run_count: int = 0) -> str:
    meta = {"last_run_at": last_run_at, "total_run_count": total_run_count}
    return json.dumps(meta, cls=RedBeatJSONEncoder)


class MetaEncoder:
    """``encode_meta`` for many entries advanced to the same instant (one tick): no JSON per entry."""

    def __init__(self, last_run_at: datetime) -> None:
        self._head = encode_meta(last_run_at, 0).rsplit("0}", 1)[0]

    def __call__(self, total_run_count: int) -> str:
        return f"{self._head}{int(total_run_count)}}}"


def decode_meta(raw: str | bytes | None) -> tuple[datetime | None, int]:
    """RedBeat's ``meta`` -> (last_run_at as an aware datetime or None, run count)."""
    if not raw:
        return None, 0
    meta = json.loads(raw)  # plain C decoder; RedBeat's object_hook costs 3x for a tick of thousands
    return _datetime(meta.get("last_run_at")), int(meta.get("total_run_count") or 0)


def _datetime(value: Any) -> datetime | None:
    if not isinstance(value, dict) or value.get("__type__") != "datetime":
        return None
    zone_value = value.get("timezone", "UTC")
    tz: Any
    if isinstance(zone_value, int | float):
        tz = timezone(timedelta(seconds=zone_value)) if zone_value else UTC
    else:
        try:
            tz = ZoneInfo(zone_value)
        except (ZoneInfoNotFoundError, ValueError):
            tz = UTC
    names = ("year", "month", "day", "hour", "minute", "second", "microsecond")
    v = {name: int(value.get(name) or 0) for name in names}
    return datetime(v["year"], v["month"], v["day"], v["hour"], v["minute"], v["second"], v["microsecond"], tzinfo=tz)


class Entry(RedBeatSchedulerEntry):
    """RedBeat's entry with our schedule encoding and an exact ``due_at``.

    RedBeat computes ``due_at`` as ``last_run_at + (next - now)``, which is only right when the entry
    ran just now; an edited entry would get a due time in the past and be reloaded every tick.
    Here it is the first slot after ``last_run_at``.
    """

    @staticmethod
    def decode_definition(definition: Any) -> Any:
        return json.loads(definition, cls=Decoder)

    @property
    def due_at(self) -> Any:
        if self.last_run_at is None:
            return self.default_now()
        if isinstance(self.schedule, CronSchedule):
            return self.schedule.next_after(self.last_run_at)
        if isinstance(self.schedule, interval_schedule):
            return self.schedule.maybe_make_aware(self.last_run_at) + self.schedule.run_every
        return super().due_at

    def save(self) -> Entry:
        from redbeat.schedulers import get_redis

        definition = {
            "name": self.name,
            "task": self.task,
            "args": self.args,
            "kwargs": self.kwargs,
            "options": self.options,
            "schedule": self.schedule,
            "enabled": self.enabled,
        }
        with get_redis(self.app).pipeline() as pipe:
            pipe.hset(self.key, "definition", json.dumps(definition, cls=Encoder))
            pipe.hsetnx(self.key, "meta", encode_meta(self.last_run_at, self.total_run_count))
            pipe.zadd(self.app.redbeat_conf.schedule_key, {self.key: self.score})
            pipe.execute()
        return self
