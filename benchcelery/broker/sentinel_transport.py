"""Our kombu transport (``benchcelery.broker.transport``) reaching Redis through Sentinel.

Only connection-pool creation changes, the way kombu's own ``SentinelChannel`` does it
(``_get_pool`` -> ``_sentinel_managed_pool``: a ``SentinelConnectionPool`` whose connections ask the
sentinels for the current master). Everything else — the fetch path, leases, per-site counters,
malformed-message handling — is inherited from ``benchcelery.broker.transport.Channel`` unchanged: the
class puts ours first in the MRO and takes from kombu's SentinelChannel only what ours does not
define (pool creation, the Sentinel connection classes); the transport options are the union of both.

The broker URL is kombu's ``sentinel://[user:pass@]h1:26379/0;sentinel://h2:26379/0`` with
``master_name`` (and ``sentinel_kwargs``) in the transport options; ``celery_app`` builds both and
registers this class as kombu's ``sentinel`` transport (as it does ours for ``redis``).
"""

from __future__ import annotations

from typing import Any

import redis
from kombu.transport import redis as kombu_redis

from benchcelery.broker import transport


class SentinelChannel(transport.Channel, kombu_redis.SentinelChannel):  # type: ignore[misc]
    # Both lists: ours (e.g. job_lease) and Sentinel's (master_name, sentinel_kwargs, ...).
    from_transport_options = tuple(  # type: ignore[assignment]
        dict.fromkeys((*transport.Channel.from_transport_options, *kombu_redis.SentinelChannel.from_transport_options))
    )

    def _get_pool(self, asynchronous: bool = False) -> Any:
        if self.connection.client is None:
            # Celery tears the connection down after a loss (collect, then close); a restore of
            # unacked messages during that would build a pool from the vanished connection info
            # and raise AttributeError, which kills the worker. A connection error is handled.
            raise redis.ConnectionError("the broker connection is closed")
        return super()._get_pool(asynchronous)


class SentinelTransport(transport.Transport):
    Channel = SentinelChannel
    default_port = kombu_redis.SentinelTransport.default_port  # type: ignore[assignment]
