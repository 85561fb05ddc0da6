"""kombu's QoS for our channel (transport.py): prefetch accounting in memory only.

The delivery scripts keep every job's state in Redis (delivery.py), so acks, rejects and restores
go to the channel, which runs them fenced by the job's owner token.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.transport import virtual

from benchcelery.broker.hooks import hooks


class QoS(kombu_redis.QoS):
    """Prefetch accounting in memory; Redis state is kept by the delivery scripts."""

    def append(self, message: Any, delivery_tag: str) -> None:
        virtual.QoS.append(self, message, delivery_tag)  # the fetch script parked it already

    def ack(self, delivery_tag: str) -> None:
        self.channel.finish(delivery_tag)
        virtual.QoS.ack(self, delivery_tag)

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        if requeue:
            self.channel.give_back(delivery_tag, front=False)
        else:
            self.channel.finish(delivery_tag)
        virtual.QoS.ack(self, delivery_tag)

    def put_back(self, delivery_tag: str) -> None:
        """A job held ahead that will not run here (worker/lookahead.py): next in its queue again
        (or, when Redis cannot be reached now, when its lease lapses)."""
        try:
            self.channel.give_back(delivery_tag, front=True)
        finally:
            virtual.QoS.ack(self, delivery_tag)

    def forget(self, delivery_tag: str) -> None:
        """A held job that is no longer ours (its lease lapsed): dropped without an ack or a restore."""
        self.channel.drop(delivery_tag)
        virtual.QoS.ack(self, delivery_tag)

    def restore_unacked(self, client: Any = None) -> list[Any]:
        """Give back the jobs this channel took that will not run here: every one when the worker
        shuts down (prefetched ones; running ones have finished by then, or a cold shutdown stopped
        them), and when the connection was lost, those Celery dropped (reserved, not yet running).
        Running jobs keep their leases (renewed over a new connection) and are acknowledged when
        they finish."""
        errors: list[Any] = []
        delivered: list[str] = list(self._delivered or {})
        keep = set() if hooks.shutting_down() else hooks.running_tags()
        for tag in delivered:
            if tag in keep:
                continue
            try:
                self.channel.give_back(tag, front=True)
            except Exception as exc:  # Redis down: the lease brings it back
                errors.append((exc, tag))
        if self._delivered is not None:
            self._delivered.clear()
        return errors

    def restore_visible(self, *args: Any, **kwargs: Any) -> None:
        """kombu's visibility-timeout sweep: replaced by leases (delivery.LeaseKeeper)."""
