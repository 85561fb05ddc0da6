"""Automatic retries: the policy a job carries, the decision after a failure, the next attempt's message.

A policy comes from ``enqueue(..., retry=3)`` or ``retry=Retry(...)`` (carried in the message's
``retry`` header), else from the queue's config (``workers.<queue>.retry``). When a job raises and
the policy allows another attempt, the pool process raises ``RetryScheduled`` (jobs/retrying.py) instead of recording
a failure; the worker's main process then finishes the job with ``ack_retry`` (broker/delayed.py),
which removes it from flight and schedules its next attempt in one step. The next attempt's
message is the same message (same job id, so ``deduplicate`` and ``get_job_status`` hold) with an
``attempts`` header listing every failed attempt (time, exception); the failed record of the last
attempt shows them all.

A job may also ask for a retry itself: ``raise RetryJob(in_seconds=30)`` (Frappe's
``RetryBackgroundJobError`` is the same class). It counts as an attempt; without a policy a job may
retry itself DEFAULT_SELF_RETRIES times. A job refused before it ran (forbidden method, unknown site,
too many redeliveries) is never retried.
"""

from __future__ import annotations

import copy
import json
import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from benchcelery.errors import ValidationError

DEFAULT_SELF_RETRIES = 5  # attempts a job may ask for by RetryJob without a policy (Frappe retries 5 times)
MAX_ATTEMPTS = 100


class RetryJob(Exception):
    """Raise inside a job to run it again later: ``raise RetryJob(in_seconds=60)``.

    ``in_seconds`` None: the policy's next interval (1 s without a policy). Counts as an attempt."""

    def __init__(self, message: str = "", in_seconds: float | None = None) -> None:
        super().__init__(message or "The job asked to be retried")
        self.in_seconds = in_seconds

    def __reduce__(self) -> Any:
        return (RetryJob, (str(self), self.in_seconds))


RetryBackgroundJobError = RetryJob  # Frappe's name


class GaveUp(Exception):
    """A retrying job an operator gave up on (its failed record's last attempt)."""


@dataclass(frozen=True)
class Retry:
    """How often and when a failed job runs again (rq's ``Retry(max, interval)`` shape).

    ``interval``: seconds before each retry (a list: one per retry, the last repeats; a number: all).
    ``exponential``: ``base * 2**(n - 1)`` seconds before retry n, at most ``cap``, with ``jitter``
    (each wait is drawn between half and all of it, Sidekiq/dramatiq style).
    ``retry_on`` / ``dont_retry_on``: exception class names (``"ConnectionError"`` or
    ``"requests.exceptions.ConnectionError"``; classes are accepted and named): only these /
    never these are retried.
    """

    max: int = 3
    interval: float | Sequence[float] = 0
    exponential: bool = False
    base: float = 10.0
    cap: float = 3600.0
    jitter: bool = True
    retry_on: tuple[str, ...] = field(default_factory=tuple)
    dont_retry_on: tuple[str, ...] = field(default_factory=tuple)

    def to_header(self) -> dict[str, Any]:
        interval = self.interval if isinstance(self.interval, int | float) else list(self.interval)
        return {
            "max": self.max, "interval": interval, "exponential": self.exponential, "base": self.base,
            "cap": self.cap, "jitter": self.jitter, "retry_on": list(self.retry_on),
            "dont_retry_on": list(self.dont_retry_on),
        }  # fmt: skip

    def delay(self, retry_number: int) -> float:
        """Seconds before retry ``retry_number`` (1 = the first retry)."""
        if self.exponential:
            wait = min(self.cap, self.base * 2 ** min(retry_number - 1, 40))
            return random.uniform(wait / 2, wait) if self.jitter else wait
        if isinstance(self.interval, int | float):
            return float(self.interval)
        steps = list(self.interval) or [0.0]
        return float(steps[min(retry_number - 1, len(steps) - 1)])

    def allows(self, exc: BaseException) -> bool:
        names = _class_names(type(exc))
        if self.dont_retry_on and names & set(self.dont_retry_on):
            return False
        return not self.retry_on or bool(names & set(self.retry_on))


# What ``enqueue(retry=...)`` accepts: a number of retries, a Retry, a dict of Retry's fields (as a
# header or a queue's config holds them), or None (the queue's default).
RetrySpec = int | Retry | dict[str, Any] | None


def policy(value: Any, what: str = "retry") -> Retry | None:
    """A Retry from what ``enqueue(retry=...)``, a header or a queue's config holds (an int = max
    retries, a dict = Retry's fields); raises ValidationError for anything else."""
    if value is None or isinstance(value, Retry):
        return value
    if isinstance(value, bool):
        raise ValidationError(f"{what} must be a number of retries or a Retry, got {value!r}")
    if isinstance(value, int):
        return _checked(Retry(max=value), what)
    if isinstance(value, dict):
        fields = dict(value)
        for name in ("retry_on", "dont_retry_on"):
            fields[name] = tuple(_exception_name(e) for e in fields.get(name) or ())
        if isinstance(fields.get("interval"), list):
            fields["interval"] = tuple(fields["interval"])
        try:
            return _checked(Retry(**fields), what)
        except TypeError as exc:
            raise ValidationError(f"{what}: {exc}") from None
    raise ValidationError(f"{what} must be a number of retries or a Retry, got {value!r}")


def header(value: Any) -> dict[str, Any] | None:
    """The ``retry`` header of ``enqueue(retry=value)`` (None: the queue's default applies)."""
    if isinstance(value, Retry):
        value = {**value.to_header(), "retry_on": [_exception_name(e) for e in value.retry_on],
                 "dont_retry_on": [_exception_name(e) for e in value.dont_retry_on]}  # fmt: skip
    found = policy(value)
    return None if found is None else found.to_header()


def _checked(p: Retry, what: str) -> Retry:
    intervals = [p.interval] if isinstance(p.interval, int | float) else list(p.interval)
    numbers = [p.base, p.cap, *intervals]
    bad = [n for n in numbers if isinstance(n, bool) or not isinstance(n, int | float) or n < 0]
    if not 0 <= p.max <= MAX_ATTEMPTS or bad:
        raise ValidationError(f"{what}: max must be 0..{MAX_ATTEMPTS} and intervals non-negative numbers")
    return p


def _exception_name(value: Any) -> str:
    if isinstance(value, type) and issubclass(value, BaseException):
        return f"{value.__module__}.{value.__qualname__}"
    if isinstance(value, str) and value:
        return value
    raise ValidationError(f"retry_on / dont_retry_on take exception classes or their names, got {value!r}")


def _class_names(cls: type) -> set[str]:
    names: set[str] = set()
    for klass in cls.__mro__:
        names |= {klass.__qualname__, f"{klass.__module__}.{klass.__qualname__}"}
    return names


def decide(
    exc: BaseException, retry_header: Any, queue_default: Any, attempts: list[dict[str, Any]], described: str
) -> tuple[float, dict[str, Any]] | None:
    """What to do after attempt ``len(attempts) + 1`` failed with ``exc``: (seconds until the next
    attempt, this attempt's record), or None (record the failure). Never raises for a bad policy
    (the failure is recorded then)."""
    try:
        found = policy(retry_header if retry_header is not None else queue_default)
    except ValidationError:
        found = None
    asked = isinstance(exc, RetryJob)
    if found is None and asked:
        found = Retry(max=DEFAULT_SELF_RETRIES, interval=1)
    if found is None or len(attempts) >= found.max or (not asked and not found.allows(exc)):
        return None
    asked_in = exc.in_seconds if isinstance(exc, RetryJob) else None
    wait = asked_in if asked_in is not None else found.delay(len(attempts) + 1)
    return max(0.0, float(wait)), {"at": time.time(), "exception": described}


def next_message(raw: dict[str, Any], attempt: dict[str, Any], new_tag: str) -> str:
    """The message of the next attempt: ``raw`` (kombu's payload of this one) with the attempt added
    to its ``attempts`` header and a fresh delivery tag (what a push gives)."""
    message = copy.deepcopy(raw)
    headers = message.setdefault("headers", {})
    headers["attempts"] = [*(headers.get("attempts") or []), attempt]
    properties = message.setdefault("properties", {})
    info = properties.get("delivery_info") or {}
    properties["delivery_info"] = {"exchange": info.get("exchange", ""), "routing_key": info.get("routing_key")}
    properties["delivery_tag"] = new_tag
    return json.dumps(message)


def attempts_of(value: Any) -> list[dict[str, Any]]:
    """The ``attempts`` header as a list (anything else: none)."""
    if not isinstance(value, Iterable) or isinstance(value, str | dict):
        return []
    return [a for a in value if isinstance(a, dict)]
