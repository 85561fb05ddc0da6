"""``bench run-redis``: the bench's side of running its queue Redis in the foreground (which port,
which config file, written first when missing); ``store.server.serve_foreground`` runs it."""

from __future__ import annotations

from pathlib import Path

from benchcelery.bench.config import Settings
from benchcelery.bench.layout import Bench
from benchcelery.deploy.files import REDIS_DATA, render_redis, write_files
from benchcelery.deploy.plan import make_plan
from benchcelery.errors import BenchError
from benchcelery.store.server import serve_foreground


def queue_redis(bench: Bench) -> tuple[int, Path]:
    """The queue Redis's port and config file (config/redis_queue.conf, written when missing).
    Raises BenchError when ``redis_queue`` is not on this machine."""
    settings = Settings.from_bench(bench)
    plan = make_plan(settings)
    if not plan.own_redis or plan.redis_port is None:
        raise BenchError(f"redis_queue ({settings.display_url}) is not on this machine; nothing to run")
    (bench.config_path / REDIS_DATA).mkdir(parents=True, exist_ok=True)
    if not plan.redis_conf.is_file():
        write_files(render_redis(settings))
    return plan.redis_port, plan.redis_conf


def run_redis(bench: Bench) -> None:
    """Exec the queue Redis with its config; when the port is already served, stand by until TERM/INT."""
    port, config_file = queue_redis(bench)
    serve_foreground(port, config_file)
