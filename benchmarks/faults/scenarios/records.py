"""Bad queue elements of every kind (g) and ``bench jobs retry`` of a job that fails again (h):
each ends as a failed-job record, none stops a worker."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

from benchmarks import procs
from benchmarks.env import BIN
from benchmarks.faults.state import enqueue, failed, idle, msg_n, msg_site, rec_n, recorded_ns, runs, starts, wait_until
from benchmarks.faults.world import BROKEN_SITE, ECHO, FAIL, QUEUE, SITE, World


def _template(w: World, n: int, method: str = ECHO, site: str = SITE) -> dict[str, Any]:
    """A real message of ``method(n=n)``, taken out of its queue (no worker is running)."""
    enqueue(w, [n], site=site, method=method)
    key = w.keys.site_list(QUEUE, site, 3)  # enqueue pushes on the site's own list
    raw = w.b.rpop(key)
    assert raw is not None
    w.b.hincrby(w.keys.pending_counts(QUEUE), site, -1)
    return json.loads(raw)  # type: ignore[no-any-return]


def _body(msg: dict[str, Any], args: list[Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    embed = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
    msg["body"] = base64.b64encode(json.dumps([args, kwargs, embed]).encode()).decode()
    return msg


def sc_poison(w: World) -> dict[str, Any]:
    """(g) Every kind of bad queue element, pushed where normal jobs wait, with a live worker."""
    w.start_broker([])
    junk: list[tuple[str, str]] = [
        ("[]", "[]"),
        ("123", "123"),
        ('"str"', '"str"'),
        ("non-JSON text", "this is not JSON {"),
        ('{"hello":"world"}', '{"hello": "world"}'),
    ]
    m = _template(w, 40_001)
    m["body"] = "!!! not base64 !!!"
    junk.append(("body not valid base64", json.dumps(m)))
    m = _template(w, 40_002)
    m["headers"]["task"] = "no.such.task"
    junk.append(("unknown task", json.dumps(m)))
    m = _body(_template(w, 40_003), [1, 2], {"n": 40_003})
    junk.append(("positional args", json.dumps(m)))
    m = _body(_template(w, 40_004), [], {"n": 40_004, "task": "x", "self": "y"})
    junk.append(("kwargs 'task' and 'self'", json.dumps(m)))
    m = _template(w, 40_005, site=BROKEN_SITE)
    junk.append(("site_config.json unreadable", json.dumps(m)))
    config = w.bench.site_config_file(BROKEN_SITE)
    saved = config.read_text()
    config.write_text("{ this is not JSON")
    key = w.keys.queue_list(QUEUE, 3)  # kombu's list, as another tool would push: workers adopt it
    try:
        for _, raw in junk:
            site = msg_site(raw)
            w.b.pipeline().lpush(key, raw).hincrby(w.keys.pending_counts(QUEUE), site, 1).lpush(
                w.keys.wake(QUEUE), ""
            ).execute()
        enqueue(w, [40_999], ms=5)  # a valid job behind the poison: the worker must still run it
        worker = w.spawn("worker", "poison")
        done = wait_until(lambda: runs(w).get(40_999, 0) >= 1 and idle(w), 120, 0.1)
        time.sleep(2)
        w.alive(worker, "poison")
    finally:
        config.write_text(saved)
    records = failed(w)
    echoed = [json.loads(x) for x in w.c.lrange("echo", 0, -1)]
    rows = []
    for label, raw in junk:
        n = msg_n(raw)
        rec = next((r for r in records if r.get("raw") == raw or (n is not None and rec_n(r) == n)), None)
        ran = n is not None and any(e.get("n") == n for e in echoed)
        rows.append(
            {
                "element": label,
                "outcome": "recorded" if rec else ("ran" if ran else "vanished"),
                "reason": (rec or {}).get("exception", ""),
                "kwargs_kept": None if rec is None else rec.get("kwargs"),
                "raw_kept": bool(rec and rec.get("raw")),
            }
        )
    w.stop(worker, "poison")
    return {
        "jobs": len(junk),
        "lost": sum(r["outcome"] == "vanished" for r in rows),
        "ran_twice": 0,
        "recorded": sum(r["outcome"] == "recorded" for r in rows),
        "elements": rows,
        "valid_job_after_poison_ran": done is not None,
        "worker_exits": list(w.exits),
    }


def sc_retry(w: World, reps: int) -> dict[str, Any]:
    """(h) ``bench jobs retry`` of a job that fails again within a second: the new record stays."""
    w.start_broker([])
    worker = w.spawn("worker", "retry")
    trials = []
    for i in range(reps):
        n = 50_000 + i
        enqueue(w, [n], method=FAIL)
        if wait_until(lambda n=n: n in recorded_ns(w), 60) is None:
            trials.append({"error": "the first failure was not recorded within 60 s"})
            continue
        rec = next(r for r in failed(w) if (r.get("kwargs") or {}).get("n") == n)
        code, _, _ = procs.run(
            [str(BIN / "bench"), "--site", SITE, "jobs", "retry", rec["job_id"]], w.env(), w.bench.root, 60
        )
        failed_again = wait_until(lambda n=n: starts(w, n) >= 2, 30)
        time.sleep(1.5)
        newer = [r for r in failed(w) if (r.get("kwargs") or {}).get("n") == n]
        trials.append(
            {
                "retry_exit": code,
                "failed_again_s": failed_again,
                "records_after": len(newer),
                "newer_record_kept": any(r.get("failed_at", 0) > rec.get("failed_at", 0) for r in newer),
            }
        )
    w.stop(worker, "retry")
    kept = sum(bool(t.get("newer_record_kept")) for t in trials)
    return {
        "jobs": reps,
        "lost": reps - kept,  # a failure whose record vanished
        "ran_twice": 0,
        "recorded": kept,
        "trials": trials,
        "worker_exits": list(w.exits),
    }
