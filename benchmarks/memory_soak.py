"""Memory of a worker's main process over a long run: N no-op jobs through one ``bench worker``.

Fills the ``default`` queue in batches (so Redis never holds more than a few batches), runs one
``bench worker --quiet`` and samples the RSS of its main process every SAMPLE_EVERY jobs; reports
RSS at the first sample (after WARMUP jobs), at the end and at its highest, and the growth per
1,000 jobs. A main process whose memory grows with the number of jobs it ran shows here.

    python -m benchmarks.memory_soak --jobs 100000 [--timeout 7200] [--out file.json]

``--timeout`` sets the ``default`` queue's time limit (``workers.default.timeout``): each job arms a
timer of that length, so a long limit keeps cancelled timers for hours unless they are released.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from benchmarks import apps, env, procs
from benchmarks.common import probe, say

WARMUP = 2_000
SAMPLE_EVERY = 2_000
BATCH = 20_000
MB = 2**20


def soak(jobs: int, e: env.Env) -> dict[str, Any]:
    e.flush()
    log = e.workdir / "logs" / "memory-soak.log"
    log.parent.mkdir(exist_ok=True)
    filled = min(BATCH, jobs)
    probe(e, ["fill", "bench", "noop", str(filled), "--sites", "1"], timeout=600)
    cmd = [str(env.BIN / "bench"), "worker", "--quiet", "--queue", "default"]
    proc = procs.spawn(cmd, e.child_env(), e.bench.root, log)
    main = psutil.Process(proc.pid)
    samples: list[tuple[int, float]] = []
    started = time.perf_counter()
    try:
        next_sample = WARMUP
        while True:
            done = int(e.redis.get(apps.COUNTER) or 0)
            if proc.poll() is not None:
                raise RuntimeError(f"the worker exited ({proc.returncode}):\n{procs.log_tail(log)}")
            if done >= next_sample:
                samples.append((done, main.memory_info().rss / MB))
                next_sample += SAMPLE_EVERY
            if filled < jobs and filled - done < BATCH // 2:
                more = min(BATCH, jobs - filled)
                probe(e, ["fill", "bench", "noop", str(more), "--sites", "1"], timeout=600)
                filled += more
            if done >= jobs:
                break
            time.sleep(0.05)
        seconds = time.perf_counter() - started
    finally:
        procs.stop(proc)
    rss = [r for _, r in samples]
    first, last = samples[0], samples[-1]
    return {
        "jobs": jobs,
        "seconds": round(seconds, 1),
        "jobs_per_s": round(jobs / seconds, 1),
        "rss_start_mb": round(first[1], 1),
        "rss_end_mb": round(last[1], 1),
        "rss_max_mb": round(max(rss), 1),
        "growth_kb_per_1000_jobs": round((last[1] - first[1]) * 1024 / max(1, (last[0] - first[0]) / 1000), 2),
        "samples": [(n, round(r, 1)) for n, r in samples],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=50_000)
    parser.add_argument("--timeout", type=int, help="the default queue's time limit, seconds")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    e = env.create()
    if args.timeout:
        e.bench.update_config({"workers": {"default": {"timeout": args.timeout}}})
    try:
        result = soak(args.jobs, e)
    finally:
        e.close()
    summary = {k: v for k, v in result.items() if k != "samples"}
    say(json.dumps(summary))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
