"""``bench metrics``: a Prometheus exporter of the figures in ``figures.py``.

Read-only and without Celery: every scrape reads Redis (a few round trips, independent of queue
length) and the sites' config files. Families are labelled by ``site`` and ``queue`` where they
apply; a Redis that cannot be reached gives ``bench_up 0`` instead of an error page.

Exposure: with ``metrics_basic_auth`` (``user:password`` or a list) every request needs one of
those logins. Off the loopback interface the exporter refuses to start without one, unless the
config states ``metrics_allow_public: true``.

Bounded output: the duration histogram's ``method`` label is only ever a method of an installed app
or the allowlist (durations.py writes ``[refused]`` for any other name), and failed records in a
queue no config names are exported under that queue with ``bench_queue_configured`` 0.
"""

from __future__ import annotations

import base64
import hmac
import ipaddress
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from benchcelery.bench.config import DEFAULTS
from benchcelery.diagnostics.figures import Figures, read_figures
from benchcelery.errors import BenchError

if TYPE_CHECKING:
    from benchcelery.runtime import Runtime

SCHEDULER_STATES = ("enabled", "disabled", "paused")


class BenchCollector(Collector):
    """Collects the bench's figures at every scrape."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    def collect(self) -> Iterator[Any]:
        started = time.perf_counter()
        up = GaugeMetricFamily("bench_up", "1 when Redis answered this scrape, else 0")
        try:
            figures = read_figures(self.rt)
        except Exception:  # Redis down or a broken config: say so in a metric, keep serving
            self.rt._redis = None  # reconnect at the next scrape
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families(figures)
        yield from lifecycle_families(figures)
        took = GaugeMetricFamily("bench_scrape_duration_seconds", "Time this scrape took to read the figures")
        took.add_metric([], time.perf_counter() - started)
        yield took


def families(fig: Figures) -> Iterator[Any]:
    """Every metric family of a set of figures."""
    now = fig.taken_at
    sq = ["site", "queue"]
    pending = GaugeMetricFamily("bench_jobs_pending", "Jobs waiting in the queue", labels=sq)
    started = GaugeMetricFamily("bench_jobs_started", "Jobs a worker has taken and not finished", labels=sq)
    failed = GaugeMetricFamily("bench_jobs_failed", "Records in the failed-job registry", labels=sq)
    stuck = GaugeMetricFamily(
        "bench_jobs_stuck", "Started jobs running past their hard time limit (their worker is gone)", labels=sq
    )
    recovered = CounterMetricFamily(
        "bench_jobs_recovered", "Jobs of dead workers put back in their queue (orphans recovered)", labels=sq
    )
    site_oldest = GaugeMetricFamily(
        "bench_jobs_oldest_pending_age_seconds", "Age of the site's oldest waiting job in the queue", labels=sq
    )
    queue_oldest = GaugeMetricFamily(
        "bench_queue_oldest_pending_age_seconds",
        "Age of the queue's oldest waiting job (0 when empty)",
        labels=["queue"],
    )
    queue_workers = GaugeMetricFamily(
        "bench_queue_workers", "Live worker processes consuming the queue", labels=["queue"]
    )
    configured = GaugeMetricFamily(
        "bench_queue_configured",
        "1 for a queue of the config, 0 for one no config names that holds failed records",
        labels=["queue"],
    )
    every_site = set(fig.scheduler.site_states)  # a site without jobs still gets its zeros
    for q in fig.queues:
        for site in sorted(every_site | set(q.sites)):
            labels = [site, q.queue]
            pending.add_metric(labels, q.pending.get(site, 0))
            started.add_metric(labels, q.started.get(site, 0))
            failed.add_metric(labels, q.failed.get(site, 0))
            stuck.add_metric(labels, q.stuck.get(site, 0))
            recovered.add_metric(labels, q.recovered.get(site, 0))
            age = q.oldest_age(site)
            if age is not None and q.pending.get(site, 0):
                site_oldest.add_metric(labels, age)
        queue_oldest.add_metric([q.queue], q.oldest_age() or 0.0)
        queue_workers.add_metric([q.queue], q.workers)
        configured.add_metric([q.queue], 1 if q.configured else 0)
    yield from (pending, site_oldest, queue_oldest, started, failed, stuck, recovered, queue_workers, configured)

    wl = ["worker", "host"]
    alive = GaugeMetricFamily(
        "bench_worker_up", "1 while the worker's heartbeat is fresh, 0 once it is gone", labels=wl
    )
    beat = GaugeMetricFamily(
        "bench_worker_last_heartbeat_age_seconds", "Seconds since the worker's heartbeat", labels=wl
    )
    done = CounterMetricFamily("bench_worker_jobs_done", "Jobs the worker finished (any outcome)", labels=wl)
    wfailed = CounterMetricFamily("bench_worker_jobs_failed", "Jobs that failed on the worker", labels=wl)
    for w in fig.workers:
        labels = [w.name, w.host or ""]
        alive.add_metric(labels, 1 if w.alive else 0)
        beat.add_metric(labels, max(0.0, now - w.last_heartbeat))
        if w.alive:
            done.add_metric(labels, w.done)
            wfailed.add_metric(labels, w.failed)
    yield from (alive, beat, done, wfailed)

    s = fig.scheduler
    up = GaugeMetricFamily("bench_scheduler_up", "1 while a `bench schedule` process ticks")
    up.add_metric([], 1 if s.alive else 0)
    tick = GaugeMetricFamily("bench_scheduler_last_tick_age_seconds", "Seconds since the scheduler's last tick")
    if s.last_tick is not None:
        tick.add_metric([], max(0.0, now - s.last_tick))
    state = GaugeMetricFamily(
        "bench_site_scheduler_state",
        "1 for the site's scheduler state (enabled/disabled/paused)",
        labels=["site", "state"],
    )
    for site, current in s.site_states.items():
        for name in SCHEDULER_STATES:
            state.add_metric([site, name], 1 if current == name else 0)
    last_enqueue = GaugeMetricFamily(
        "bench_site_scheduler_last_enqueue_age_seconds",
        "Seconds since the scheduler last enqueued a job of the site",
        labels=["site"],
    )
    for site, at in s.last_enqueue.items():
        last_enqueue.add_metric([site], max(0.0, now - at))
    run_age = GaugeMetricFamily(
        "bench_scheduled_job_last_run_age_seconds",
        "Seconds since a scheduled job last finished",
        labels=["site", "job"],
    )
    run_ok = GaugeMetricFamily(
        "bench_scheduled_job_last_run_success",
        "1 when a scheduled job's last run succeeded, 0 when it failed",
        labels=["site", "job"],
    )
    for run in s.last_runs:
        run_age.add_metric([run.site, run.job], max(0.0, now - run.ended_at))
        run_ok.add_metric([run.site, run.job], 1 if run.outcome == "ok" else 0)
    yield from (up, tick, state, last_enqueue, run_age, run_ok)

    hist = HistogramMetricFamily(
        "bench_job_duration_seconds", "Run time of jobs, per method and queue", labels=["method", "queue"]
    )
    wait = HistogramMetricFamily(
        "bench_job_wait_seconds",
        "Time jobs waited in their queue (enqueue to start), per method and queue",
        labels=["method", "queue"],
    )
    for d in fig.durations:
        hist.add_metric([d.method, d.queue], _buckets(d.buckets), d.total_seconds)
        if d.wait_buckets:
            wait.add_metric([d.method, d.queue], _buckets(d.wait_buckets), d.wait_seconds)
    yield from (hist, wait)
    minute = GaugeMetricFamily(
        "bench_jobs_last_minute",
        "Jobs of the last complete minute per site, queue and outcome (enqueued, started, done, failed, retried)",
        labels=["site", "queue", "outcome"],
    )
    for site, queue, outcome, n in fig.per_minute:
        minute.add_metric([site, queue, outcome], n)
    yield minute


def _buckets(cumulative: list[tuple[float, int]]) -> list[tuple[str, int]]:
    return [("+Inf" if b == float("inf") else repr(b), n) for b, n in cumulative]


def lifecycle_families(fig: Figures) -> Iterator[Any]:
    """Delayed jobs (run later, retrying) per site and queue, and whether each queue is paused."""
    sq = ["site", "queue"]
    scheduled = GaugeMetricFamily(
        "bench_jobs_scheduled", "Jobs waiting to run later (enqueue_in / enqueue_at), not yet due or moved", labels=sq
    )
    retrying = GaugeMetricFamily(
        "bench_jobs_retrying", "Failed jobs waiting for their next attempt (automatic retries)", labels=sq
    )
    paused = GaugeMetricFamily(
        "bench_queue_paused", "1 while the queue is paused (bench queue pause)", labels=["queue"]
    )
    every_site = set(fig.scheduler.site_states)
    for q in fig.queues:
        if not q.configured:
            continue
        for site in sorted(every_site | set(q.scheduled) | set(q.retrying)):
            scheduled.add_metric([site, q.queue], q.scheduled.get(site, 0))
            retrying.add_metric([site, q.queue], q.retrying.get(site, 0))
        paused.add_metric([q.queue], 1 if q.paused else 0)
    yield from (scheduled, retrying, paused)


def make_registry(rt: Runtime) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BenchCollector(rt))
    return registry


def exposition(rt: Runtime) -> str:
    """One scrape as Prometheus text (``bench metrics --once``)."""
    from prometheus_client import generate_latest

    return generate_latest(make_registry(rt)).decode()


def logins(settings_conf: Any) -> list[str]:
    """The ``user:password`` logins of ``metrics_basic_auth``; raises BenchError for a malformed one."""
    value = settings_conf.get("metrics_basic_auth") or []
    found = [value] if isinstance(value, str) else [str(v) for v in value]
    if any(":" not in v for v in found):
        raise BenchError("metrics_basic_auth must be 'user:password' (or a list of them)")
    return found


def is_loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def check_exposure(address: str, auth: list[str], allow_public: bool) -> None:
    """Refuse to serve beyond this machine without a login, unless the config says it may."""
    if not auth and not allow_public and not is_loopback(address):
        raise BenchError(
            f"Refusing to serve metrics on {address} without authentication: set metrics_basic_auth "
            "('user:password'), or metrics_allow_public: true, in common_site_config.json, or bind to 127.0.0.1"
        )


def with_basic_auth(app: Any, auth: list[str]) -> Any:
    """A WSGI app answering 401 unless the request carries one of the ``user:password`` logins."""
    expected = [f"Basic {base64.b64encode(a.encode()).decode()}".encode() for a in auth]

    def guarded(environ: dict[str, Any], start_response: Any) -> Any:
        given = str(environ.get("HTTP_AUTHORIZATION") or "").encode()
        if any(hmac.compare_digest(given, e) for e in expected):
            return app(environ, start_response)
        start_response(
            "401 Unauthorized", [("WWW-Authenticate", 'Basic realm="bench metrics"'), ("Content-Length", "0")]
        )
        return [b""]

    return guarded


def serve(
    rt: Runtime,
    port: int = DEFAULTS["metrics_port"],
    address: str = DEFAULTS["metrics_address"],
    auth: list[str] | None = None,
) -> Any:
    """Serve ``/metrics`` on ``address:port`` in a background thread (behind basic auth when ``auth``
    names logins); returns (server, thread)."""
    from wsgiref.simple_server import make_server

    from prometheus_client import make_wsgi_app
    from prometheus_client.exposition import ThreadingWSGIServer, _get_best_family, _SilentHandler

    class Server(ThreadingWSGIServer):  # prometheus_client's own server, address family per address
        pass

    Server.address_family, addr = _get_best_family(address, port)
    app = make_wsgi_app(make_registry(rt))
    httpd = make_server(addr, port, with_basic_auth(app, auth) if auth else app, Server, handler_class=_SilentHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    return httpd, thread
