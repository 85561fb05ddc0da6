"""Creating benches, sites and apps on disk."""

from __future__ import annotations

import keyword
import shutil
from pathlib import Path

from benchcelery.bench.layout import Bench, derive_bench_id, write_json
from benchcelery.errors import ValidationError
from benchcelery.store.server import is_listening

FIRST_REDIS_PORT = 11000
EXAMPLE_APP = "jobs_demo"


def create_bench(path: Path, redis_url: str | None = None, example_app: bool = False) -> Bench:
    from benchcelery.bench.redis_url import redis_url_problem as url_problem
    from benchcelery.deploy.safe import check_path

    root = path.expanduser().resolve()
    if (root / "sites").exists():
        raise ValidationError(f"{root} already holds a bench")
    check_path(root, advice="choose another path")  # written into config and deploy files
    if redis_url and url_problem(redis_url):
        raise ValidationError(f"--redis-url {redis_url[:200]!r} {url_problem(redis_url)}")
    for sub in ("sites", "config", "config/pids", "logs", "apps"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    if not redis_url:
        port = FIRST_REDIS_PORT
        while is_listening(port):
            port += 1
        redis_url = f"redis://127.0.0.1:{port}"
    # No redis_cache: frappe.cache() defaults to the queue server's next database, so it follows a
    # later `bench set-config -g redis_queue ...` (a value written here would stay behind).
    conf = {"bench_id": derive_bench_id(root), "redis_queue": redis_url, "background_workers": 1}
    write_json(root / "sites" / "common_site_config.json", conf)
    (root / "sites" / "apps.txt").write_text("")
    bench = Bench(root)
    if example_app:
        install_example_app(bench)
    _write_run_files(bench)
    return bench


def _write_run_files(bench: Bench) -> None:
    """Procfile and Redis config (when the deploy module is present)."""
    try:
        from benchcelery.deploy import write_dev_files
    except ImportError:
        return
    write_dev_files(bench)


def create_site(bench: Bench, name: str) -> Path:
    return bench.new_site(name, {})


def add_app(bench: Bench, name: str) -> None:
    apps = bench.apps()
    if name not in apps:
        (bench.sites_path / "apps.txt").write_text("".join(f"{a}\n" for a in [*apps, name]))


def create_app(bench: Bench, name: str) -> Path:
    from benchcelery.bench.names import clip
    from benchcelery.jobs.methods import shadowed_module

    if not name.isidentifier() or keyword.iskeyword(name) or len(name) > 64:
        raise ValidationError(f"App name must be a Python identifier of at most 64 characters: {clip(name)!r}")
    shadowed = shadowed_module(name)
    if shadowed:
        raise ValidationError(f"App name {name} shadows the importable module {shadowed}; choose another name")
    path = bench.root / "apps" / name
    if path.exists():
        raise ValidationError(f"{path} already exists")
    path.mkdir(parents=True)
    (path / "__init__.py").write_text(f'"""{name}"""\n')
    (path / "hooks.py").write_text(
        '"""Hooks: before_job / after_job, scheduler_events (Frappe format)."""\n\nscheduler_events: dict = {}\n'
    )
    (path / "tasks.py").write_text(
        '"""Job methods: enqueue them as "' + name + '.tasks.<function>"."""\n\n\n'
        'def hello(name: str = "world") -> str:\n    return f"hello {name}"\n'
    )
    add_app(bench, name)
    return path


def install_example_app(bench: Bench) -> Path:
    source = Path(__file__).parents[1] / "example_app"
    target = bench.root / "apps" / EXAMPLE_APP
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
    add_app(bench, EXAMPLE_APP)
    return target
