"""CPU of counting one succeeded job's metrics in the worker's main process (``JobRequest._observe``).

Calls ``_observe`` in a loop on a request built without Celery (no Redis: what the tally drains
is counted and dropped; the hour roll-up is put off), with the history on, over a few queues,
methods and sites, and prints microseconds per job. The tally is drained every ``--per-write``
jobs, as a worker finishing that many jobs a second would (the loop runs far faster than a
worker, so its own once-a-second writes would hide that cost). Same interpreter for two trees:

    python -m benchmarks.observe_cost                      # this tree
    PYTHONPATH=/path/to/other/tree python benchmarks/observe_cost.py
"""

from __future__ import annotations

import argparse
import os
import time
from types import SimpleNamespace
from typing import Any

from benchcelery.bench.keys import Keys
from benchcelery.jobs import history, request, tally
from benchcelery.jobs.request import JobRequest


def _request(i: int) -> Any:
    job: Any = object.__new__(JobRequest)
    job.name = "testapp.tasks.noop"
    job._request_dict = {
        "method": ["testapp.tasks.noop", "testapp.tasks.send_mail", "testapp.tasks.sync"][i % 3],
        "site": ["site1.local", "site2.local"][i % 2],
        "enqueued_at": time.time() - 0.05,
    }
    job._delivery_info = {"routing_key": ["short", "default"][i % 2]}
    job._message = SimpleNamespace(channel=SimpleNamespace(note=_drop))
    return job


written = [0]


def _drop(commands: list[tuple[Any, ...]]) -> None:
    written[0] += len(commands)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=100_000, help="jobs (default 100,000)")
    parser.add_argument("--rounds", type=int, default=3, help="best of this many loops")
    parser.add_argument("--per-write", type=int, default=1000, help="jobs per tally write (default 1,000)")
    args = parser.parse_args()
    rt = SimpleNamespace(keys=Keys.from_prefix("bc:bench:"), redis=None)
    request.get_runtime = lambda: rt  # type: ignore[attr-defined]
    history.configure(history.Retention())
    history._next_roll = float("inf")  # no roll-up (it reads Redis once a minute)
    tally._owner = os.getpid()  # no flusher thread: the loop's own drains write everything
    jobs = [_request(i) for i in range(12)]
    best = float("inf")
    for _ in range(args.rounds):
        started = time.perf_counter()
        for i in range(args.n):
            if not i % args.per_write:
                tally.TALLY.last = float("-inf")  # the next job writes
            jobs[i % 12]._observe(0.0012)
        best = min(best, time.perf_counter() - started)
    print(f"{best / args.n * 1e6:.2f} us/job (best of {args.rounds} x {args.n:,}; {written[0]:,} commands drained)")


if __name__ == "__main__":
    main()
