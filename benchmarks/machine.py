"""What the numbers were measured on: machine, kernel, Python, package and Redis versions."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import redis

PACKAGES = (
    "benchcelery",
    "celery",
    "kombu",
    "billiard",
    "redis",
    "hiredis",
    "celery-redbeat",
    "rq",
    "click",
    "psutil",
)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def _mem_total_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            cwd=Path(__file__).parent,
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            cwd=Path(__file__).parent,
        )
        return out.stdout.strip() + (" (modified)" if dirty.stdout.strip() else "") if out.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired):
        return None


def describe(client: redis.Redis, binary: str) -> dict[str, Any]:
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    info = client.info("server")
    return {
        "nproc": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gb": _mem_total_gb(),
        "kernel": f"{platform.system()} {platform.release()}",
        "load_avg_at_start": os.getloadavg(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "packages": versions,
        "hiredis_in_use": bool(getattr(redis.utils, "HIREDIS_AVAILABLE", False)),
        "redis_server": f"{info.get('redis_version')} ({binary}, --save '' --appendonly no)",
        "commit": _git_commit(),
    }
