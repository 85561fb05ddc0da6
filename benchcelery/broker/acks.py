"""Acks that ride with a channel's next poll.

A busy worker's event loop finishes a job and, right away, sends its next poll (the fetch script).
The finished job's ack rides in that fetch itself (its tag and token in the script's arguments,
applied before it takes the next job, the outcomes in its reply), and the job's metrics (commands
whose replies do not matter) go in the same write, ahead of it: one round trip and one script per
job. The metrics' replies come back ahead of the poll's reply and are read first.

Until the fetch's reply is read an ack is still pending: the job stays in what the channel holds
(its lease is renewed), and an ack whose write failed, or whose fetch reply never came (the
connection was lost), is sent again, with the next poll or by ``flush`` (on close, or by the lease
thread for a channel whose connection was lost) - as when acks were commands of their own, whose
replies came in the same read as the fetch's. A fetch Redis refused (an error reply: its script
not loaded, out of memory - fetch does not run then, ack does) applied none of them: they are
applied at once with the ack script. An ack sent again after its first copy was applied finds no
record and counts in ``lost_acks``, as before.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import redis

from benchcelery.broker.delivery import STALE, UNKNOWN, Delivery

logger = logging.getLogger("benchcelery.broker.delivery")

Ack = tuple[str, str]  # (delivery tag, owner token)


class PendingAcks:
    """The acks and notes of one channel, from the job's finish until Redis applied them.

    ``delivery`` gives the channel's delivery scripts; it is called only when there is something
    to send (on a closed channel, making a client could open a new connection pool)."""

    def __init__(self, delivery: Callable[[], Delivery]) -> None:
        self.delivery = delivery
        self.waiting: list[Ack] = []  # finished jobs whose ack goes with the next poll
        self.sent: list[Ack] = []  # ... went with the outstanding poll
        self.notes: list[tuple[Any, ...]] = []  # commands without replies that matter (metrics)
        self.notes_sent = 0
        self.rides = 0  # polls that carried acks so far

    def defer(self, tag: str, token: str) -> None:
        self.waiting.append((tag, token))

    def defer_notes(self, commands: list[tuple[Any, ...]]) -> None:
        self.notes += commands

    def to_send(self) -> bool:
        """Whether the next poll carries acks or notes (also those of a poll whose replies never came)."""
        return bool(self.waiting or self.notes or self.sent or self.notes_sent)

    def unapplied(self) -> bool:
        """Whether an ack is still waiting or its reply has not been read."""
        return bool(self.waiting or self.sent)

    def held(self) -> dict[str, str]:
        """Tag -> token of the jobs whose ack has not been applied yet (their leases are renewed)."""
        return {**dict(self.sent), **dict(self.waiting)}

    def ride(self) -> tuple[list[tuple[Any, ...]], list[Ack]]:
        """The commands to send ahead of the fetch, and the acks to put in it (``fetch_command``);
        from here on they count as sent."""
        notes, self.notes = self.notes, []
        self.notes_sent = len(notes)
        # Acks sent with a poll whose replies were never read (its connection was dropped without
        # a read, e.g. by kombu's check of an overdue BRPOP) go again: overwritten, their jobs
        # would no longer be renewed and would run again once their leases lapsed.
        self.sent, self.waiting = [*self.sent, *self.waiting], []
        self.rides += 1
        return notes, list(self.sent)

    def not_sent(self) -> None:
        """The write that carried them failed: the acks wait for the next poll (the notes are dropped)."""
        self.waiting[:0], self.sent, self.notes_sent = self.sent, [], 0

    def read_notes(self, connection: Any) -> None:
        """Read the replies of the notes sent ahead of the poll (their errors are only logged)."""
        while self.notes_sent:
            self.notes_sent -= 1
            try:
                connection.read_response()
            except redis.exceptions.ResponseError as exc:
                logger.warning("Could not update job metrics: %s", exc)

    def applied(self, outcomes: list[int]) -> None:
        """The fetch that carried the acks replied: their outcomes, in order."""
        sent, self.sent = self.sent, []
        for (tag, _token), outcome in zip(sent, outcomes, strict=True):
            report(tag, outcome)

    def refused(self) -> None:
        """The fetch that carried the acks replied with an error (it did not run): apply them now
        with the ack script, which also runs out of memory; those not applied wait again."""
        sent, self.sent = self.sent, []
        for i, (tag, token) in enumerate(sent):
            try:
                done = self.delivery().ack(tag, token)
            except BaseException:
                self.waiting[:0] = sent[i:]
                raise
            report(tag, done)

    def unread(self) -> None:
        """The fetch's reply was lost (the connection failed): the acks it carried go again, and the
        replies of the notes sent with it are not waited for."""
        self.waiting[:0], self.sent, self.notes_sent = self.sent, [], 0

    def flush(self, polling: bool) -> None:
        """Send the notes and acks still waiting, now (one round trip each). ``polling``: a poll is
        outstanding, so the acks sent with it are still to be read, not sent again."""
        if not polling:  # sent with a poll whose replies never came
            self.unread()
        notes, self.notes = self.notes, []
        self.send_notes(notes)
        while self.waiting:
            tag, token = self.waiting[0]
            done = self.delivery().ack(tag, token)  # raises while Redis is away: kept for the next try
            self.waiting.pop(0)
            report(tag, done)

    def send_notes(self, commands: list[tuple[Any, ...]]) -> None:
        """Send ``commands`` now, in one pipeline; their errors are ignored."""
        if commands:
            with self.delivery().r.pipeline(transaction=False) as pipe:  # unprefixed: full key names
                for command in commands:
                    pipe.execute_command(*command)
                pipe.execute(raise_on_error=False)


def report(tag: str, outcome: int) -> None:
    """Log an ack that did not apply: the job's lease had lapsed and it went back to its queue
    (STALE), or Redis had no record of it (UNKNOWN)."""
    if outcome == STALE:
        logger.error(
            "Job %s finished after its lease had lapsed and it was put back in its queue "
            "(counted in stale_acks; doctor shows it)",
            tag,
        )
    elif outcome == UNKNOWN:
        logger.warning(
            "Job %s finished, but Redis had no record of it in flight: Redis restarted without its data, or "
            "its lease lapsed and it already finished elsewhere (counted in lost_acks; doctor shows it)",
            tag,
        )
