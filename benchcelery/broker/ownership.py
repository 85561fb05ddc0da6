"""The transport channel's hold on the jobs it took: which it still owns, which a renewal found
lost, and whether a job held ahead may start (a worker stalled past its lease must not start a job
another worker now holds). Mixed into ``transport.Channel``."""

from __future__ import annotations

import logging
from time import monotonic
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from benchcelery.broker.acks import PendingAcks
    from benchcelery.broker.delivery import Delivery

logger = logging.getLogger("benchcelery.broker.delivery")


class Ownership:
    _tokens: dict[str, str]  # tag -> the owner token this channel took it with
    _fresh: dict[str, float]  # tag -> monotonic time until which its lease is surely ours
    _lost: set[str]  # tags a renewal said are no longer ours
    _acks: PendingAcks
    job_lease: int

    @property
    def delivery(self) -> Delivery:  # the channel's (transport.Channel.delivery)
        raise NotImplementedError

    def _holding(self) -> dict[str, str]:
        held = {**dict(self._tokens), **self._acks.held()}
        for tag in self._lost & held.keys():
            del held[tag]
        return held

    def renewed(self, held: dict[str, str], lost: list[str], started: float) -> None:
        """The lease thread renewed ``held`` in a call that began at ``started`` (monotonic):
        those not ``lost`` are surely ours for half a lease from then."""
        until = started + self.job_lease / 2
        for tag in held.keys() - set(lost):
            if tag in self._tokens:
                self._fresh[tag] = until
        self.lost(lost)

    def lost(self, tags: list[str]) -> None:
        for tag in tags:
            if self._tokens.get(tag) and tag not in self._lost:
                self._lost.add(tag)
                logger.error(
                    "The lease of job %s lapsed while this worker held it (the worker was stalled or cut off "
                    "from Redis): it was put back in its queue; if it has not started here it will not",
                    tag,
                )

    def may_start(self, tag: str) -> bool:
        """Whether a job this channel holds may start now: its lease is surely still ours (taken
        or renewed less than half a lease ago), or a renewal of it now says so. A job that is no
        longer ours (a worker stalled, or cut off from Redis, while it held the job ahead) is
        forgotten here, without an ack: its new holder runs it, or its lease brings it back."""
        token = self._tokens.get(tag)
        if token and tag not in self._lost:
            if monotonic() < self._fresh.get(tag, 0.0):
                return True
            try:
                if self.delivery.owns(tag, token):
                    self._fresh[tag] = monotonic() + self.job_lease / 2
                    return True
            except Exception as exc:  # Redis unreachable: unknown, so not started; the lease decides
                logger.warning("Could not check the lease of job %s before starting it: %s", tag, exc)
        logger.error(
            "Job %s was not started: its lease lapsed while this worker held it (stalled or cut off from "
            "Redis); it was, or will be, put back in its queue and runs once elsewhere",
            tag,
        )
        self.drop(tag)
        return False

    def drop(self, tag: str) -> None:
        """Forget a job without acknowledging it (it is not ours anymore)."""
        self._tokens.pop(tag, None)
        self._fresh.pop(tag, None)
        self._lost.discard(tag)
