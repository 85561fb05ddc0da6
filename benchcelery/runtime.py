"""The process's current bench: settings, Celery app and Redis client, built lazily once.

``benchcelery.init(site=..., bench_path=...)`` sets it up explicitly; library calls that need it
without ``init`` find the bench from $BENCH_PATH or the current directory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from benchcelery.bench.config import Settings
from benchcelery.bench.layout import Bench, find_bench
from benchcelery.context import local

# The Celery app's task modules, loaded by a worker at start and by any process that finalizes the app:
# the job task with the transport's hooks, and the scheduler's run log listening to it. Named, not
# imported: the runtime is where the layers are wired together, and stays importable without them.
TASK_MODULES = ("benchcelery.jobs.execute", "benchcelery.scheduler.runlog")

if TYPE_CHECKING:
    import redis
    from celery import Celery


@dataclass
class Runtime:
    settings: Settings
    strategy: str | None = None
    _app: Any = field(default=None, repr=False)
    _redis: Any = field(default=None, repr=False)

    @property
    def bench(self) -> Bench:
        return self.settings.bench

    @property
    def keys(self):  # type: ignore[no-untyped-def]
        return self.settings.keys

    @property
    def app(self) -> Celery:
        if self._app is None:
            from benchcelery.broker.celery_app import make_app

            self._app = make_app(self.settings, self.strategy, TASK_MODULES)
        return self._app

    @property
    def redis(self) -> redis.Redis:
        if self._redis is None:
            from benchcelery.store.connection import connect

            self._redis = connect(self.settings)
        return self._redis

    def apps(self) -> list[str]:
        return self.bench.apps()

    def app_names(self) -> tuple[str, ...]:
        """``apps`` without the copy (enqueue checks every job's method against it)."""
        return self.settings.bench.app_names()

    def allowed_methods(self) -> list[str]:
        extra = self.settings.get("allowed_methods") or []
        return [str(m) for m in extra] if isinstance(extra, list) else []


_current: Runtime | None = None


def init(
    site: str | None = None,
    bench_path: str | os.PathLike[str] | None = None,
    username: str | None = None,
    password: str | None = None,
    redis_url: str | None = None,
) -> Runtime:
    """Select the bench (and site) this process works with; returns the runtime."""
    global _current
    bench = find_bench(bench_path)
    bench.activate()
    settings = Settings.from_bench(bench, username=username, password=password, redis_url=redis_url)
    if site:
        bench.require_site(site)
        local.site = site
        local.conf = bench.merged_config(site)
        local.user = local.user or "Administrator"
    local.bench_path = str(bench.root)
    _current = Runtime(settings)
    return _current


def set_runtime(rt: Runtime) -> None:
    global _current
    rt.bench.activate()
    local.bench_path = str(rt.bench.root)
    _current = rt


def get_runtime() -> Runtime:
    """The current runtime, initialised from $BENCH_PATH / the cwd on first use."""
    if _current is None:
        return init(bench_path=local.bench_path)
    return _current  # (a forked child dropped the parent's Redis client in _forked: no getpid per call)


def _forked() -> None:
    """In a forked child (a pool process): the parent's sockets are not this process's to use."""
    if _current is not None:
        _current._redis = None


os.register_at_fork(after_in_child=_forked)
