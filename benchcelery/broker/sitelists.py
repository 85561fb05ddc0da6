"""The transport channel's storage of waiting jobs: one list per site and priority
(``q:<queue>:<site>``), the ring of sites with work (``sites:<queue>``), the per-site pending
counters (``pending:<queue>``) and the wake list (``wake:<queue>``), all written in one MULTI per
push. What other tools push to kombu's own per-queue lists is moved to the sites' lists
(adopt.lua) when a worker starts consuming a queue (and by the poll, poll.py); queue_declare's
count and ``celery purge`` cover both layouts. Mixed into ``transport.Channel``."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from kombu.utils.json import dumps

from benchcelery.broker import envelope
from benchcelery.store.durable import execute_push

if TYPE_CHECKING:
    from kombu.transport import redis as kombu_redis

    from benchcelery.bench.keys import Keys
    from benchcelery.broker.delivery import Delivery

    _Base = kombu_redis.Channel
else:
    _Base = object

logger = logging.getLogger("benchcelery.broker.delivery")


class SiteLists(_Base):
    if TYPE_CHECKING:
        keys: Keys

        @property
        def delivery(self) -> Delivery: ...  # the channel's (transport.Channel.delivery)

    def counts_key(self, queue: str) -> str:
        return self.keys.pending_counts(queue)

    # --- producing ---
    def _put(self, queue: str, message: Any, **kwargs: Any) -> None:
        if queue.endswith(".pidbox"):  # remote-control replies: not jobs, not counted
            return super()._put(queue, message, **kwargs)
        counts, site = self.counts_key(queue), envelope.site(message)
        # kombu's client prefixes LPUSH/ZADD keys itself (not HINCRBY's): those by their bare names.
        bare = self.global_keyprefix or ""
        key = self.keys.site_list(queue, site, self._get_message_priority(message, reverse=False)).removeprefix(bare)
        wake, ring = self.keys.wake(queue).removeprefix(bare), self.keys.sites(queue).removeprefix(bare)
        batch = kwargs.pop("_publish_batch", None)
        if batch is not None:
            batch.add("lpush", key, dumps(message))
            batch.add("hincrby", counts, site, 1)
            batch.add("zadd", ring, {site: 0}, nx=True)
            batch.add("lpush", wake, "")
            return
        with self.conn_or_acquire() as client, client.pipeline() as pipe:
            pipe.lpush(key, dumps(message)).hincrby(counts, site, 1).zadd(ring, {site: 0}, nx=True).lpush(wake, "")
            execute_push(pipe, self.connection.client.transport_options)  # WAIT for replicas when configured (ha.py)

    def _site_lists(self, queue: str) -> list[str]:
        """Every site list of ``queue`` that may hold messages (full names: the unprefixed client)."""
        r = self.delivery.r
        sites = {_str(s) for s in r.zrange(self.keys.sites(queue), 0, -1)} | {
            _str(s) for s in r.hkeys(self.counts_key(queue))
        }
        return [key for site in sorted(sites) for key in self.keys.site_lists(queue, site)]

    def _size(self, queue: str) -> int:
        """Messages waiting in ``queue``: kombu's lists and every site's."""
        if queue.endswith(".pidbox"):
            return int(super()._size(queue))
        r = self.delivery.r
        with r.pipeline(transaction=False) as pipe:
            for key in [*self.keys.queue_lists(queue), *self._site_lists(queue)]:
                pipe.llen(key)
            return sum(pipe.execute())

    def _purge(self, queue: str) -> int:
        size = super()._purge(queue)
        if queue.endswith(".pidbox"):
            return int(size)
        r = self.delivery.r  # full names: unprefixed client
        lists = self._site_lists(queue)
        with r.pipeline(transaction=True) as pipe:
            for key in lists:
                pipe.llen(key)
            pipe.delete(*lists, self.counts_key(queue), self.keys.wake(queue), self.keys.sites(queue))
            size += sum(pipe.execute()[:-1])
        return int(size)

    # --- adopting kombu's one-list layout ---
    def basic_consume(self, queue: str, *args: Any, **kwargs: Any) -> Any:
        if not queue.endswith(".pidbox"):
            self._adopt([queue])
        return super().basic_consume(queue, *args, **kwargs)

    def _adopt(self, queues: list[str]) -> int:
        """Move what waits in kombu's lists of ``queues`` into the sites' lists (adopt.lua); returns
        how many moved (0 also when Redis refused, e.g. out of memory: they wait and move later)."""
        try:
            moved = self.delivery.adopt(queues)
        except self.ResponseError as exc:
            logger.warning("Could not move waiting jobs to their sites' lists: %s", exc)
            return 0
        if moved:
            logger.info("Moved %d waiting job(s) from kombu's one-list layout to their sites' lists", moved)
        return moved


def _str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
