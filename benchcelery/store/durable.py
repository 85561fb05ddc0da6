"""Durable enqueue: wait until replicas hold a pushed job (Redis ``WAIT``).

Redis replicates asynchronously: a job pushed to the master a moment before the master is lost
may not have reached the replica that Sentinel promotes, and is gone. With config
``enqueue_wait_replicas: N`` every push (``enqueue``, ``enqueue_many``, the scheduler's runs, a
worker re-queueing a job) is followed by ``WAIT N <timeout>`` on the connection that wrote it, so
it returns only once N replicas acknowledged the job (or the timeout, ``enqueue_wait_timeout``
seconds, ran out: then a warning says the job is queued on the master only). A failover then loses
no acknowledged job.

``WAIT`` covers the writes of its own connection only, and does nothing inside MULTI, so the push
is sent as ``MULTI ... EXEC WAIT`` on one connection held for the purpose; its reply is read with
a deadline of ``enqueue_wait_timeout`` plus the socket read timeout.

With Sentinel, a push that meets a lost master (connection refused or reset, no master known yet)
waits for the promoted one: it is tried again every FAILOVER_RETRY seconds for up to
``enqueue_failover_wait`` seconds, then one ``RedisUnavailableError`` says so (``failover_wait``).
A timeout is not tried again (the push may have been applied).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from benchcelery.bench.config import DEFAULTS, Settings
from benchcelery.errors import RedisUnavailableError, ValidationError
from benchcelery.store import sentinel

logger = logging.getLogger("benchcelery.enqueue")

WAIT_REPLICAS = "enqueue_wait_replicas"
WAIT_TIMEOUT = "enqueue_wait_timeout"
FAILOVER_WAIT = "enqueue_failover_wait"
FAILOVER_RETRY = 0.5  # seconds between tries while waiting for the promoted master
T = TypeVar("T")


def wait_settings(conf: Mapping[str, Any]) -> tuple[int, float]:
    """(replicas, timeout in s) from config; ValidationError for bad values."""
    try:
        replicas = int(conf.get(WAIT_REPLICAS) or 0)
        timeout = float(conf.get(WAIT_TIMEOUT) or DEFAULTS[WAIT_TIMEOUT])
    except (TypeError, ValueError):
        raise ValidationError(f"Config keys {WAIT_REPLICAS} / {WAIT_TIMEOUT} must be numbers") from None
    if replicas < 0 or timeout <= 0:
        raise ValidationError(f"Config keys {WAIT_REPLICAS} must be >= 0 and {WAIT_TIMEOUT} > 0")
    return replicas, timeout


def transport_options(settings: Settings) -> dict[str, Any]:
    """kombu transport options: Sentinel's (master name, sentinel credentials) and the durable
    enqueue setting, which ``benchcelery.broker.transport`` reads on every push."""
    options: dict[str, Any] = {}
    if sentinel.is_sentinel_url(settings.redis_url):
        options.update(sentinel.kombu_transport_options(settings))
    replicas, timeout = wait_settings(settings.conf)
    if replicas:
        options.update({WAIT_REPLICAS: replicas, WAIT_TIMEOUT: timeout})
    return options


def failover_wait(settings: Settings) -> float:
    """Seconds an enqueue waits for a promoted master (0 without Sentinel: it fails at once)."""
    if not sentinel.is_sentinel_url(settings.redis_url):
        return 0.0
    try:
        return max(0.0, float(settings.conf.get(FAILOVER_WAIT, DEFAULTS[FAILOVER_WAIT])))
    except (TypeError, ValueError):
        raise ValidationError(f"Config key {FAILOVER_WAIT} must be a number of seconds") from None


def through_failover(settings: Settings, push: Callable[[], T]) -> T:
    """``push()``, tried again while the master is lost (a failover), for up to ``failover_wait``
    seconds; then RedisUnavailableError naming the URL and the cause.

    The settings are read only after a failed push: a single ``enqueue`` comes here every time."""
    started = time.monotonic()
    try:
        return push()
    except Exception as exc:
        error = _lost_master(exc)
    wait = failover_wait(settings)
    if not wait:
        raise error
    while time.monotonic() + FAILOVER_RETRY <= started + wait:
        time.sleep(FAILOVER_RETRY)
        try:
            return push()
        except Exception as exc:
            error = _lost_master(exc)
    from benchcelery.store.connection import describe

    raise RedisUnavailableError(
        f"Could not enqueue: no Redis master at {settings.display_url} answered within "
        f"{wait:.0f} s ({FAILOVER_WAIT}): {describe(error)}"
    ) from None


def _lost_master(exc: Exception) -> Exception:
    """``exc`` when it says the master is lost (refused, reset, no master yet; not a timeout), else
    it is raised again."""
    import redis

    if not isinstance(exc, redis.ConnectionError):
        raise exc
    return exc


def execute_push(pipe: Any, options: Mapping[str, Any] | None) -> Any:
    """Run a transaction pipeline of pushes; with ``enqueue_wait_replicas`` in ``options``, as
    ``MULTI ... EXEC WAIT`` on one connection. Returns the transaction's replies."""
    replicas = int((options or {}).get(WAIT_REPLICAS) or 0)
    if replicas <= 0:
        return pipe.execute()
    timeout = float((options or {}).get(WAIT_TIMEOUT) or DEFAULTS[WAIT_TIMEOUT])
    pushes = [args for args, _ in pipe.command_stack]
    commands = [("MULTI",), *pushes, ("EXEC",), ("WAIT", replicas, int(timeout * 1000))]
    pipe.reset()
    pool = pipe.connection_pool
    conn = pool.get_connection()
    try:
        conn.send_packed_command(conn.pack_commands(commands))
        replies = []
        error: Exception | None = None
        for i, _ in enumerate(commands):  # read every reply, so the connection stays in step
            try:  # WAIT answers after up to its timeout: the socket timeout is not its deadline
                last = i == len(commands) - 1
                replies.append(conn.read_response(timeout=wait_deadline(timeout)) if last else conn.read_response())
            except Exception as exc:  # a ResponseError (EXECABORT, WRONGTYPE): kept to raise after
                if not _is_response_error(exc):
                    raise
                error = error or exc
                replies.append(exc)
    except BaseException:
        conn.disconnect()
        raise
    finally:
        pool.release(conn)
    results = replies[-2]
    if error is None and isinstance(results, list):
        error = next((r for r in results if isinstance(r, Exception)), None)
    if error is not None:
        raise error
    check_replicated(int(replies[-1]), replicas, timeout)
    return results


def wait_deadline(timeout: float) -> float:
    """Read deadline (s) of a WAIT reply: its own timeout plus the socket read timeout."""
    from benchcelery.store.connection import SOCKET_TIMEOUT

    return timeout + SOCKET_TIMEOUT


def check_replicated(acked: int, replicas: int, timeout: float) -> None:
    """Warn when fewer replicas than asked acknowledged a push within ``timeout`` seconds."""
    if acked < replicas:
        logger.warning(
            "Enqueue not replicated: %d of %d replica(s) acknowledged within %.1f s "
            "(enqueue_wait_replicas); the job is queued on the master only and is lost if it fails now",
            acked,
            replicas,
            timeout,
        )


def _is_response_error(exc: Exception) -> bool:
    import redis

    return isinstance(exc, redis.ResponseError)
