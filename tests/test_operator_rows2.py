"""An operator's second week (rows 1, 3, 4, 8, 11): code reload in development, the cache following
the queue, a health probe with Redis down, scheduler numbers and outcomes that agree, one Redis log
name, logrotate, real origins. Real `bench` processes (the installed entry point), the session Redis,
the dashboard in headless Chromium where it is a page.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from benchcelery.store.server import free_port
from tests.conftest import BENCH_BIN, BenchHandle

S1 = ("--site", "site1.local")


def bench_cmd(cwd: Path, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([BENCH_BIN, *args], cwd=cwd, capture_output=True, text=True, timeout=60, input=input)


# --- row 3: frappe.cache() follows redis_queue unless the user set redis_cache ---------------------------
def test_the_cache_follows_the_queue_after_set_config(tmp_path: Path, bench: BenchHandle) -> None:
    made = bench_cmd(tmp_path, "init", "b", "--redis-url", f"redis://127.0.0.1:{free_port()}")
    assert made.returncode == 0, made.stderr
    root = tmp_path / "b"
    assert bench_cmd(root, "new-site", "s.local").returncode == 0
    moved = bench_cmd(root, "set-config", "-g", "redis_queue", bench.url)
    assert moved.returncode == 0, moved.stderr
    console = bench_cmd(root, "--site", "s.local", "console", input="print('PING', frappe.cache().ping())\n")
    assert "PING True" in console.stdout, (console.stdout, console.stderr)
    conf = json.loads((root / "sites" / "common_site_config.json").read_text())
    assert "redis_cache" not in conf

    # A bench made before: init's redis_cache (the old queue's next database) goes when the queue moves.
    old_queue = f"redis://127.0.0.1:{free_port()}"
    (root / "sites" / "common_site_config.json").write_text(
        json.dumps({**conf, "redis_queue": old_queue, "redis_cache": f"{old_queue}/1"})
    )
    moved = bench_cmd(root, "set-config", "-g", "redis_queue", bench.url)
    assert moved.stdout.strip() == "Removed redis_cache (written by bench init): frappe.cache() follows redis_queue"
    assert "redis_cache" not in json.loads((root / "sites" / "common_site_config.json").read_text())
    # One the user chose stays.
    mine = f"{bench.url}/5"
    assert bench_cmd(root, "set-config", "-g", "redis_cache", mine).returncode == 0
    assert bench_cmd(root, "set-config", "-g", "redis_queue", bench.url).stdout == ""
    console = bench_cmd(
        root,
        "--site",
        "s.local",
        "console",
        input="print('KW', frappe.cache().connection_pool.connection_kwargs['db'])\n",
    )
    assert "KW 5" in console.stdout, (console.stdout, console.stderr)
