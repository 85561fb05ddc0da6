"""The transport channel's intake: a taken element becomes a kombu message only after it is
checked (``envelope.check``); an invalid one, or one whose workers died on it more than
``max_redeliveries`` times, is recorded as failed and acknowledged instead; a delivery that makes
the worker fail counts against the message. Mixed into ``transport.Channel``."""

from __future__ import annotations

import json
import logging
from time import monotonic, time
from typing import TYPE_CHECKING, Any

from kombu.transport import virtual
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import object_hook

from benchcelery.broker import envelope
from benchcelery.broker.hooks import hooks

if TYPE_CHECKING:
    from benchcelery.bench.keys import Keys
    from benchcelery.broker.delivery import Delivery, Taken

logger = logging.getLogger("benchcelery.broker.delivery")

# kombu's JSON decoding (kombu.utils.json.loads: its object hook turns its type markers back into
# dates, UUIDs, decimals, ...), with one decoder made once: kombu's makes one for every call.
loads = json.JSONDecoder(object_hook=object_hook).decode

# The key under which a checked envelope carries its decoded body from the intake to JobMessage
# (popped there: it is never written anywhere).
DECODED = "benchcelery.decoded-body"


class JobMessage(virtual.Message):
    """kombu's message of a taken job, holding the body ``envelope.check`` decoded: kombu's
    ``payload`` and Celery's request (jobs/request.py) use it instead of decoding it again."""

    def __init__(self, payload: dict[str, Any], channel: Any = None, **kwargs: Any) -> None:
        decoded = payload.pop(DECODED, None)
        super().__init__(payload, channel=channel, **kwargs)
        if decoded is not None:
            self._decoded_cache = decoded


class Intake:
    _tokens: dict[str, str]
    _fresh: dict[str, float]
    job_lease: int
    max_redeliveries: int
    keys: Keys

    @property
    def delivery(self) -> Delivery:  # the channel's (transport.Channel.delivery)
        raise NotImplementedError

    def _count_crash(self, taken: Taken) -> None:
        """Count a failed delivery under the message's own tag, where fetch reads its lapses (a job
        taken again after a lapse runs under a fresh delivery tag)."""
        tag = taken.tag
        try:
            own = loads(bytes_to_str(taken.raw))["properties"]["delivery_tag"]
            tag = own if isinstance(own, str) else tag
        except Exception:  # a message that decodes at all had its tag checked by envelope.check
            pass
        try:
            pipe = self.delivery.r.pipeline(transaction=False)
            pipe.hincrby(self.keys.redeliveries, tag, 1)
            pipe.zadd(self.keys.lapsed_takes, {taken.tag: time()})  # fetches read lapses again
            pipe.execute()
        except Exception as exc:  # the lease lapses instead, and recovery counts it
            logger.warning("Could not count the failed delivery of job %s: %s", tag, exc)

    def _envelope(self, taken: Taken, token: str) -> dict[str, Any] | None:
        """The message, ready for kombu, owned by ``token``; None (recorded and removed) if invalid,
        or if its workers died (or failed on it) more than ``max_redeliveries`` times."""
        if taken.lapses > int(self.max_redeliveries):
            reason = f"Not run again: its worker died {taken.lapses} times while it held the job"
            hooks.record_malformed(taken.queue, taken.raw, reason, taken.tag)
            self.delivery.ack(taken.tag, token)
            return None
        try:
            message = loads(bytes_to_str(taken.raw))
            body = envelope.check(message, loads)
        except Exception as exc:  # anything that fails decoding or checking: not a valid message
            _record_malformed(taken, exc)
            self.delivery.ack(taken.tag, token)
            return None
        properties = message["properties"]
        properties["delivery_tag"] = taken.tag
        info = properties.setdefault("delivery_info", {})
        info["redelivered"] = taken.lapses  # the job engine fails a job whose workers keep dying
        info["routing_key"] = taken.queue  # where it waited, whatever the element claims
        self._tokens[taken.tag] = token
        self._fresh[taken.tag] = monotonic() + self.job_lease / 2
        message[DECODED] = body
        return message


def _record_malformed(taken: Taken, exc: Exception) -> None:
    hooks.record_malformed(taken.queue, taken.raw, f"Malformed message: {type(exc).__name__}: {exc}", taken.tag)
