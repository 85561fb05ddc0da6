"""Every config key benchcelery reads, typed and checked in one table (``SCHEMA``).

A bad value is answered with one line naming the file and the key, e.g.
``sites/common_site_config.json: workers.short must be an object {timeout, background_workers}``,
before anything runs (``Bench`` checks each JSON file when it reads it; ``set-config`` checks a
value before writing it; ``bench doctor`` lists every problem). Keys not in the table are allowed:
apps keep their own keys in site config. Adding a key is one line in ``SCHEMA``.

Secrets (``Key.secret``, and any key named like a password, secret or token) and passwords inside
URLs are masked by ``masked`` wherever config is shown.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchcelery.bench.keys import is_valid_bench_id
from benchcelery.bench.names import check_method_path, queue_name_problem
from benchcelery.bench.redis_url import mask_url, redis_url_problem
from benchcelery.errors import ValidationError

Check = Callable[[Any], str | None]  # None when the value is fine, else what is wrong with it
MASK = "********"
SITE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*$")
SITE_NAME_MAX = 200
CONFIG_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,127}$")
MAX_SECONDS = 366 * 24 * 3600
# Key names that hold credentials (other helpers' keys such as flower_basic_auth or
# dashboard_auth are masked without a schema entry).
_SECRET_WORDS = ("password", "passwd", "secret", "token", "api_key", "private_key", "auth", "credential")


@dataclass(frozen=True)
class Key:
    check: Check
    secret: bool = False


# --- checks -------------------------------------------------------------------------------------------
def integer(low: int, high: int) -> Check:
    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int | str):
            return f"must be a whole number from {low} to {high}"
        try:
            number = int(value)
        except ValueError:
            return f"must be a whole number from {low} to {high}"
        return None if low <= number <= high else f"must be from {low} to {high}"

    return check


def boolean(value: Any) -> str | None:
    if isinstance(value, bool) or value in (0, 1) or value in ("0", "1", "true", "false", "True", "False"):
        return None
    return "must be true/false (or 1/0)"


def text(max_len: int = 1000, pattern: re.Pattern[str] | None = None, what: str = "") -> Check:
    def check(value: Any) -> str | None:
        if not isinstance(value, str):
            return "must be a string"
        if len(value) > max_len:
            return f"must be at most {max_len} characters"
        if pattern is not None and not pattern.match(value):
            return f"must be {what}" if what else "has characters that are not allowed"
        return None

    return check


def list_of(item: Check, what: str) -> Check:
    def check(value: Any) -> str | None:
        if not isinstance(value, list):
            return f"must be a list of {what}"
        for entry in value:
            problem = item(entry)
            if problem:
                return f"must be a list of {what}; {_clip(entry)!r} {problem}"
        return None

    return check


def time_zone(value: Any) -> str | None:
    if not isinstance(value, str) or not value or len(value) > 64:
        return "must be an IANA time zone name such as Europe/Paris"
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        return "is not a known time zone (e.g. UTC, Asia/Kolkata)"
    return None


def bench_id(value: Any) -> str | None:
    if is_valid_bench_id(value):
        return None
    return "may use only letters, digits, '.', '_' and '-' (at most 128, starting with a letter or digit)"


def site_name(value: Any) -> str | None:
    if not isinstance(value, str) or len(value) > SITE_NAME_MAX or not SITE_NAME.match(value) or value == "all":
        return f"must be a site name (letters, digits, '-', '_' between single dots, at most {SITE_NAME_MAX})"
    return None


def method_path(value: Any) -> str | None:
    if not isinstance(value, str):
        return "must be a dotted path string"
    try:
        check_method_path(value)
    except ValidationError as exc:
        return str(exc)
    return None


def workers(value: Any) -> str | None:
    if not isinstance(value, dict):
        return "must be an object {queue: {timeout, background_workers}}"
    for queue, opts in value.items():
        problem = queue_name_problem(queue)
        if problem:
            return problem
        if not isinstance(opts, dict):
            return f"{queue} must be an object {{timeout, background_workers}}"
        for key, check in WORKER_KEYS.items():
            if key in opts and opts[key] is not None:
                problem = check(opts[key])
                if problem:
                    return f"{queue}.{key} {problem}"
    return None


_NO_SPACE = re.compile(r"^\S+\Z")  # written into Redis/sentinel config files: no spaces or newlines


def seconds_float(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 3600:
        return "must be a number of seconds (0 < s <= 3600)"
    return None


def retry_policy(value: Any) -> str | None:
    """``workers.<queue>.retry``: a number of retries (0..100) or an object of Retry's fields (jobs/retry.py)."""
    fields = {"max", "interval", "exponential", "base", "cap", "jitter", "retry_on", "dont_retry_on"}
    if isinstance(value, int) and not isinstance(value, bool):
        return None if 0 <= value <= 100 else "must be 0..100 retries"
    if isinstance(value, dict) and set(value) <= fields:
        return None
    return f"must be a number of retries or an object with {', '.join(sorted(fields))}"


def queue_weight(value: Any) -> str | None:
    """A site's share of turns on its queues (jobs/fairness.py)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1000:
        return "must be a number above 0 (at most 1000; 2 = twice the turns of a site with 1)"
    return None


def queue_max_running(value: Any) -> str | None:
    """``{queue: most running jobs of the site}`` (jobs/fairness.py)."""
    if not isinstance(value, dict):
        return 'must be an object like {"default": 2}'
    for queue, cap in value.items():
        problem = queue_name_problem(queue)
        if problem:
            return problem
        if isinstance(cap, bool) or not isinstance(cap, int) or not 0 <= cap <= 100_000:
            return f"{queue} must be a whole number from 0 to 100000"
    return None


_RATE_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*([smh])\s*$")


def parse_rate(value: Any) -> float:
    """``"10/s"`` -> ms between two starts (100.0). ValidationError when it is not ``<n>/<s|m|h>``."""
    found = _RATE.match(value) if isinstance(value, str) else None
    if not found or float(found.group(1)) <= 0:
        raise ValidationError(f"rate limit {value!r} is not like 10/s, 30/m or 100/h")
    return _RATE_UNITS[found.group(2)] * 1000 / float(found.group(1))


def rate_limits(value: Any) -> str | None:
    """``{method: "<n>/<s|m|h>"}`` (jobs/fairness.py)."""
    if not isinstance(value, dict):
        return 'must be an object like {"myapp.api.sync": "10/s"}'
    for method, rate in value.items():
        problem = method_path(method)
        if problem:
            return f"{_clip(method)!r} {problem}"
        try:
            parse_rate(rate)
        except ValidationError:
            return f"{method} must be a rate like 10/s, 30/m or 100/h"
    return None


WORKER_KEYS: dict[str, Check] = {
    "retry": retry_policy,
    "timeout": integer(1, MAX_SECONDS),
    "background_workers": integer(1, 256),
    "stop_timeout": integer(1, MAX_SECONDS),
    "pool": boolean,
}

# --- the table: every key benchcelery reads ---------------------------------------------------------------
SCHEMA: dict[str, Key] = {
    "bench_id": Key(bench_id),
    "redis_queue": Key(redis_url_problem),
    "redis_cache": Key(redis_url_problem),
    "use_rq_auth": Key(boolean),
    # Redis Sentinel and durable enqueue (store/sentinel.py, store/durable.py); Frappe's redis_queue_sentinel_* too.
    "sentinel_username": Key(text(128, re.compile(r"^[A-Za-z0-9._-]+$"), "a user name")),
    "sentinel_password": Key(text(1000, _NO_SPACE, "a password without spaces"), secret=True),
    "redis_username": Key(text(128, re.compile(r"^[A-Za-z0-9._-]+$"), "a user name")),
    "redis_password": Key(text(1000, _NO_SPACE, "a password without spaces"), secret=True),
    "redis_replication_password": Key(text(1000, _NO_SPACE, "a password without spaces"), secret=True),
    "redis_sentinel_user_password": Key(text(1000, _NO_SPACE, "a password without spaces"), secret=True),
    "redis_queue_sentinel_enabled": Key(boolean),
    "redis_queue_sentinels": Key(list_of(text(300, _NO_SPACE, "host:port"), "host:port addresses")),
    "redis_queue_master_service": Key(text(128, re.compile(r"^[A-Za-z0-9._-]+$"), "a master name")),
    "redis_queue_sentinel_username": Key(text(128, re.compile(r"^[A-Za-z0-9._-]+$"), "a user name")),
    "redis_queue_sentinel_password": Key(text(1000, _NO_SPACE, "a password without spaces"), secret=True),
    "redis_queue_master_username": Key(text(128, re.compile(r"^[A-Za-z0-9._-]+$"), "a user name")),
    "redis_queue_master_password": Key(text(1000, _NO_SPACE, "a password without spaces"), secret=True),
    "enqueue_wait_replicas": Key(integer(0, 64)),
    "enqueue_wait_timeout": Key(seconds_float),
    "enqueue_failover_wait": Key(seconds_float),
    "worker_hostname": Key(text(255, re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$"), "a host name")),
    "rq_username": Key(text(128, re.compile(r"^[A-Za-z0-9._-]+$"), "a user name")),
    "rq_password": Key(text(1000), secret=True),
    "workers": Key(workers),
    "background_workers": Key(integer(1, 256)),
    "background_process_niceness": Key(integer(0, 19)),
    "rq_failed_jobs_limit": Key(integer(0, 10_000_000)),
    "rq_job_failure_ttl": Key(integer(1, 10 * MAX_SECONDS)),
    "rq_results_ttl": Key(integer(1, MAX_SECONDS)),
    "job_lease": Key(integer(3, 3600)),
    "max_redeliveries": Key(integer(0, 1000)),
    # Sites sharing a queue (jobs/fairness.py): weight and caps in a site's config, rate limits in either.
    "queue_weight": Key(queue_weight),
    "queue_max_running": Key(queue_max_running),
    "rate_limits": Key(rate_limits),
    "scheduler_interval": Key(integer(1, 7 * 24 * 3600)),
    "scheduler_tick_interval": Key(integer(1, 3600)),
    "scheduler_lock_timeout": Key(integer(1, 3600)),
    "time_zone": Key(time_zone),
    "default_site": Key(site_name),
    "allowed_methods": Key(list_of(method_path, "dotted method paths")),
    "enable_scheduler": Key(boolean),
    "pause_scheduler": Key(boolean),
    "disable_scheduler": Key(boolean),
    "maintenance_mode": Key(boolean),
    "db_type": Key(text(32, re.compile(r"^(mariadb|mysql|postgres|postgresql)$", re.I), "mariadb or postgres")),
    "db_host": Key(text(255)),
    "db_port": Key(integer(1, 65535)),
    "db_name": Key(text(255)),
    "db_user": Key(text(255)),
    "db_password": Key(text(1000), secret=True),
    "db_url": Key(text(2000), secret=True),
    "realtime": Key(boolean),
    "realtime_secret": Key(text(1000), secret=True),
    "realtime_token_max_age": Key(integer(1, 10 * MAX_SECONDS)),
    "realtime_public_rooms": Key(list_of(text(300), "room names (a trailing * matches a prefix)")),
    "realtime_cors_allowed_origins": Key(lambda v: None if isinstance(v, str | list) else "must be a string or list"),
    "socketio_port": Key(integer(1, 65535)),
    "socketio_host": Key(text(255)),
    "doctor_fail_on": Key(text(200)),
    "worker_send_task_events": Key(boolean),
    "metrics": Key(boolean),
    "metrics_port": Key(integer(1, 65535)),
    "metrics_address": Key(text(255)),
    "metrics_allow_public": Key(boolean),
    "metrics_basic_auth": Key(lambda v: None if isinstance(v, str | list) else "must be a string or list", secret=True),
    "flower_port": Key(integer(1, 65535)),
    "flower_address": Key(text(255)),
    "flower_basic_auth": Key(lambda v: None if isinstance(v, str | list) else "must be a string or list", secret=True),
    "dashboard": Key(boolean),
    "dashboard_host": Key(text(255)),
    "dashboard_port": Key(integer(1, 65535)),
    "dashboard_read_only": Key(boolean),
    "dashboard_secret": Key(text(1000), secret=True),
    "dashboard_token_max_age": Key(integer(1, 10 * MAX_SECONDS)),
    "dashboard_trusted_proxies": Key(list_of(text(100), "proxy addresses")),
    "durations_ttl": Key(integer(60, 10 * MAX_SECONDS)),
    "history_enabled": Key(boolean),
    "history_minutes_ttl": Key(integer(3600, 10 * MAX_SECONDS)),
    "history_hours_ttl": Key(integer(86400, 10 * MAX_SECONDS)),
    "flower_allowed_hosts": Key(list_of(text(300), "host names")),
}


# --- checking -------------------------------------------------------------------------------------
def problems(conf: dict[str, Any], source: str | Path) -> list[str]:
    """Every bad value of ``conf`` as one line ``<source>: <key> <what is wrong>``."""
    found = []
    for key, value in conf.items():
        spec = SCHEMA.get(key)
        if spec is None or value is None:
            continue
        problem = spec.check(value)
        if problem:
            found.append(f"{source}: {key} {problem}")
    return found


def validate(conf: dict[str, Any], source: str | Path) -> dict[str, Any]:
    """``conf`` unchanged when every known key is well-typed; else ValidationError (the first problem)."""
    found = problems(conf, source)
    if found:
        raise ValidationError(found[0])
    return conf


def check_key(key: str) -> None:
    """A config key ``set-config`` may write."""
    if not isinstance(key, str) or not CONFIG_KEY.match(key):
        raise ValidationError(f"Config key {_clip(key)!r} must be a name (letters, digits, '_', '.', '-')")


def check_value(key: str, value: Any, source: str | Path) -> None:
    """A value ``set-config`` may write (None deletes the key, whatever its name)."""
    if value is not None:
        check_key(key)
        validate({key: value}, source)


# --- secrets ----------------------------------------------------------------------------------------
def is_secret(key: str) -> bool:
    spec = SCHEMA.get(key)
    return bool(spec and spec.secret) or any(word in key.lower() for word in _SECRET_WORDS)


def masked(conf: Any, key: str = "") -> Any:
    """A copy of ``conf`` with secrets replaced by ``********`` and URL passwords by ``***``."""
    if key and is_secret(key) and conf not in (None, "") and not isinstance(conf, bool):
        return MASK
    if isinstance(conf, dict):
        return {k: masked(v, str(k)) for k, v in conf.items()}
    if isinstance(conf, list):
        return [masked(v) for v in conf]
    if isinstance(conf, str) and "://" in conf:
        return mask_url(conf)
    return conf


def _clip(value: Any, limit: int = 100) -> str:
    text = str(value)
    return text if len(text) <= limit else f"{text[:limit]}..."


def known_keys() -> Iterable[str]:
    return SCHEMA.keys()
