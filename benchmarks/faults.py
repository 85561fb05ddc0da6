"""``python -m benchmarks faults [--quick] [--only NAME,...]``: the fault suite of issue 10.

Runs real ``bench worker`` / ``bench worker-pool`` processes against a private Redis (the
*broker*, restarted with the options each scenario needs) and kills, pauses, stops and poisons
them. Every job of the suite's app does, on a second private Redis that no fault ever touches (the
*counter*), ``HINCRBY starts <n>`` when it starts and ``INCR count`` + ``SADD ran <n>`` +
``HINCRBY runs <n>`` when it ends, so lost and doubled runs are counted exactly: a job is *lost*
when it never ran to its end and has no failed record; it *ran twice* when ``runs[n] >= 2``.
Writes ``benchmarks/RELIABILITY.md`` (+ ``reliability.json``); see ``--help`` for the sizes.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import redis

from benchcelery.bench.keys import UNKNOWN_SITE, Keys
from benchcelery.bench.layout import Bench
from benchcelery.deploy.scaffold import add_app, create_bench
from benchcelery.store.server import find_server_binary, free_port, start_server, stop_server
from benchmarks import procs
from benchmarks.common import say
from benchmarks.env import BIN

APP = "bcfault"
RUN = f"{APP}.tasks.run"
FAIL = f"{APP}.tasks.fail"
ECHO = f"{APP}.tasks.echo"
STAMP = f"{APP}.tasks.stamp"
COUNTER_ENV = "BENCHMARK_FAULTS_COUNTER_URL"
BENCH_ID = "fl"
SITE = "f1.local"
BROKEN_SITE = "broken.local"
QUEUE = "default"
LEASE = 30  # the default job_lease (config.py); the suite runs with the default config
RESUMED_AFTER = 10  # "resumed": this many jobs ran after the fault ended (more than were in flight)

SCENARIOS = (
    "kill",
    "kill-fast",
    "orphan",
    "long",
    "crash-always",
    "crash-everysec",
    "noaof",
    "pause",
    "stop",
    "pause-long",
    "poison",
    "retry",
    "cold",
    "idle",
)

_TASKS = f'''"""Jobs of the fault suite: every start and every finish is counted on the counter Redis."""

import json
import os
import time

import redis

_client = None
_pid = 0


def _r():
    global _client, _pid
    if _client is None or _pid != os.getpid():
        _client = redis.Redis.from_url(os.environ["{COUNTER_ENV}"])
        _pid = os.getpid()
    return _client


def run(n, ms=5):
    r = _r()
    r.pipeline().hincrby("starts", n, 1).hset("running", n, os.getpid()).execute()
    time.sleep(ms / 1000)
    r.pipeline().incr("count").sadd("ran", n).hincrby("runs", n, 1).hdel("running", n).execute()


def fail(n, ms=0):
    _r().hincrby("starts", n, 1)
    raise RuntimeError(f"job {{n}} fails every time")


def echo(**kwargs):
    _r().rpush("echo", json.dumps(kwargs, default=str))


def stamp(n, ms=0):
    _r().hset("stamps", n, repr(time.time()))
'''


# --- the world: two private Redis servers and a bench ---


@dataclass
class World:
    workdir: Path
    binary: str
    port: int
    counter_port: int
    counter_proc: subprocess.Popen[bytes]
    bench: Bench
    keys: Keys = field(default_factory=lambda: Keys(BENCH_ID))
    broker_proc: subprocess.Popen[bytes] | None = None
    broker_args: list[str] = field(default_factory=list)
    broker_dir: Path | None = None
    _b: redis.Redis | None = None
    _c: redis.Redis | None = None
    exits: list[str] = field(default_factory=list)  # workers that exited without being told to

    @property
    def b(self) -> redis.Redis:
        if self._b is None:
            self._b = redis.Redis(port=self.port, socket_timeout=30)
        return self._b

    @property
    def c(self) -> redis.Redis:
        if self._c is None:
            self._c = redis.Redis(port=self.counter_port)
        return self._c

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BENCH_", "FRAPPE_", "PYTHON"))}
        env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
        env[COUNTER_ENV] = f"redis://127.0.0.1:{self.counter_port}/0"
        return env

    # broker life cycle
    def start_broker(self, args: list[str], fresh: bool = True) -> None:
        if fresh:
            self.broker_dir = Path(tempfile.mkdtemp(prefix="broker-", dir=self.workdir))
            self.broker_args = list(args)
        assert self.broker_dir is not None
        self.broker_proc = start_server(self.port, self.broker_dir, binary=self.binary, args=self.broker_args)
        self._b = None

    def kill_broker(self) -> None:
        if self.broker_proc and self.broker_proc.poll() is None:
            self.broker_proc.kill()
            self.broker_proc.wait(10)

    def stop_broker(self) -> None:
        if self.broker_proc:
            stop_server(self.broker_proc)

    def close(self) -> None:
        self.stop_broker()
        stop_server(self.counter_proc)

    # workers
    def spawn(self, kind: str, name: str, num: int = 2) -> subprocess.Popen[bytes]:
        args = ["worker"] if kind == "worker" else ["worker-pool", "--num-workers", str(num)]
        log = self.workdir / "logs" / f"{name}.log"
        log.parent.mkdir(exist_ok=True)
        return procs.spawn([str(BIN / "bench"), *args, "--quiet"], self.env(), self.bench.root, log)

    def alive(self, proc: subprocess.Popen[bytes], name: str) -> bool:
        """Whether a worker is still running; an exit we did not cause is noted in ``exits``."""
        if proc.poll() is None:
            return True
        note = f"{name} (pid {proc.pid}) exited with {proc.returncode}"
        if note not in self.exits:
            self.exits.append(note)
        procs.LIVE.pop(proc.pid, None)
        return False

    def stop(self, proc: subprocess.Popen[bytes], name: str) -> None:
        """Warm shutdown of a worker we are done with (an earlier exit counts as a worker exit)."""
        if self.alive(proc, name):
            try:
                procs.stop(proc, 30)
            except procs.Timeout:
                pass

    def sigkill(self, proc: subprocess.Popen[bytes], name: str) -> None:
        """SIGKILL the worker's process group (as a supervisor does) and wait until all of it is gone."""
        self.alive(proc, name)
        members = procs.tree(proc.pid)
        procs.kill_group(proc, signal.SIGKILL)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        procs.LIVE.pop(proc.pid, None)
        psutil.wait_procs(members, timeout=10)

    def reset(self) -> None:
        self.b.flushall()
        self.c.flushall()
        self.exits = []


def create_world(workdir: Path) -> World:
    binary = find_server_binary()
    port = free_port()
    counter_port = free_port()
    while counter_port == port:
        counter_port = free_port()
    counter = start_server(counter_port, workdir / "counter", binary=binary)
    try:
        bench = create_bench(workdir / "bench", redis_url=f"redis://127.0.0.1:{port}/0")
        bench.update_config({"bench_id": BENCH_ID})
        app = bench.root / "apps" / APP
        app.mkdir(parents=True, exist_ok=True)
        (app / "__init__.py").write_text("")
        (app / "hooks.py").write_text("scheduler_events: dict = {}\n")
        (app / "tasks.py").write_text(_TASKS)
        add_app(bench, APP)
        bench.new_site(SITE, {})
        bench.new_site(BROKEN_SITE, {})
    except BaseException:
        stop_server(counter)
        raise
    return World(workdir, binary, port, counter_port, counter, bench)


# --- reading the state ---


def wait_until(pred: Callable[[], bool], timeout: float, interval: float = 0.05) -> float | None:
    """Seconds until ``pred()`` held, or None after ``timeout`` (errors count as 'not yet')."""
    start = time.monotonic()
    while True:
        try:
            if pred():
                return time.monotonic() - start
        except redis.RedisError:
            pass
        if time.monotonic() - start > timeout:
            return None
        time.sleep(interval)


def msg_n(raw: bytes | str) -> Any:
    """The ``n`` keyword argument of a queued message (None if it has none or is no message)."""
    try:
        msg = json.loads(raw)
        body = msg["body"]
        if msg["properties"].get("body_encoding") == "base64":
            body = base64.b64decode(body)
        return json.loads(body)[1].get("n")
    except Exception:
        return None


def waiting(w: World) -> list[bytes]:
    out: list[bytes] = []
    for q in ("short", QUEUE, "long"):
        for key in w.keys.queue_lists(q):
            out += w.b.lrange(key, 0, -1)
    return out


def idle(w: World) -> bool:
    """Nothing waiting in a queue and nothing in flight."""
    return not waiting(w) and w.b.hlen(w.keys.inflight) == 0


def failed(w: World) -> list[dict[str, Any]]:
    out = []
    for key in w.b.scan_iter(f"{w.keys.prefix}failed:*:data"):
        out += [json.loads(v) for v in w.b.hvals(key)]
    return out


def recorded_ns(w: World) -> set[int]:
    ns = set()
    for rec in failed(w):
        kwargs = rec.get("kwargs")
        if isinstance(kwargs, dict) and isinstance(kwargs.get("n"), int):
            ns.add(kwargs["n"])
    return ns


def runs(w: World) -> dict[int, int]:
    return {int(k): int(v) for k, v in w.c.hgetall("runs").items()}


def starts(w: World, n: int) -> int:
    return int(w.c.hget("starts", n) or 0)


def tally(w: World, ids: Iterable[int]) -> dict[str, Any]:
    ids = list(ids)
    done = runs(w)
    rec = recorded_ns(w)
    lost = sorted(n for n in ids if not done.get(n) and n not in rec)
    twice = sorted(n for n in ids if done.get(n, 0) >= 2)
    return {
        "jobs": len(ids),
        "lost": len(lost),
        "lost_ids": lost,
        "ran_twice": len(twice),
        "ran_twice_ids": twice,
        "recorded": len(rec & set(ids)),
        "stale_acks": int(w.b.get(w.keys.stale_acks) or 0),
        "recovered": sum(int(v) for v in w.b.hvals(w.keys.recovered(QUEUE))),
    }


def enqueue(w: World, ns: Iterable[int], ms: int = 5, site: str = SITE, method: str = RUN) -> None:
    """Enqueue ``method(n=n, ms=ms)`` for every n (enqueue_many, in this process)."""
    import benchcelery

    benchcelery.init(site=site, bench_path=w.bench.root)
    items = [{"method": method, "kwargs": {"n": n, "ms": ms}} for n in ns]
    for i in range(0, len(items), 1000):
        benchcelery.enqueue_many(items[i : i + 1000])


def settle(w: World, ids: list[int], timeout: float) -> float | None:
    """Wait until every job ran or is recorded and nothing waits or is in flight."""

    def done() -> bool:
        if not idle(w):
            return False
        finished = set(runs(w)) | recorded_ns(w)
        return all(n in finished for n in ids)

    return wait_until(done, timeout, 0.2)


# --- scenarios ---


def sc_kill(w: World, jobs: int, period: float, budget: float) -> dict[str, Any]:
    """(a) SIGKILL of the worker-pool main process group every ``period`` s, restarted each time."""
    w.start_broker([])
    ids = list(range(jobs))
    enqueue(w, ids)
    held: set[int] = set()  # in flight when a kill hit (taken, not acknowledged)
    running: set[int] = set()  # started and not finished when a kill hit
    kills = 0
    slow_cycles = 0
    started = time.monotonic()
    while waiting(w) and time.monotonic() - started < budget:
        before = int(w.c.get("count") or 0)
        proc = w.spawn("pool", f"kill-{kills}")
        time.sleep(period)
        w.sigkill(proc, f"kill-{kills}")
        kills += 1
        held |= {n for n in map(msg_n, w.b.hvals(w.keys.unacked)) if isinstance(n, int)}
        now_running = [int(n) for n in w.c.hkeys("running")]
        running |= set(now_running)
        if now_running:
            w.c.hdel("running", *now_running)
        if int(w.c.get("count") or 0) == before:
            slow_cycles += 1
    last_kill = time.monotonic()
    left_waiting = len(waiting(w))
    say(f"  {kills} kills; {len(held)} jobs held at a kill, {len(running)} running; final worker drains the rest")
    final = w.spawn("worker", "kill-final")
    recover = settle(w, ids, LEASE * 3 + 60)
    w.stop(final, "kill-final")
    out = tally(w, ids)
    out.update(
        kills=kills,
        period_s=period,
        held_at_kills=len(held),
        running_at_kills=len(running),
        ran_twice_not_held=len(set(out["ran_twice_ids"]) - held),
        cycles_without_progress=slow_cycles,
        waiting_when_kills_stopped=left_waiting,
        recover_s=None if recover is None else time.monotonic() - last_kill,
        worker_exits=list(w.exits),
    )
    return out


def _owner(w: World, n: int) -> tuple[str, str] | None:
    """(delivery tag, owner token) of job n while it is in flight."""
    for tag, raw in w.b.hgetall(w.keys.unacked).items():
        if msg_n(raw) == n:
            meta = w.b.hget(w.keys.inflight, tag)
            return tag.decode(), (json.loads(meta)[0] if meta else "")
    return None


def sc_orphan(w: World, reps: int) -> dict[str, Any]:
    """(b) A job held by a SIGKILLed worker: back in its queue, and running on the other worker."""
    w.start_broker([])
    workers = {name: w.spawn("worker", name) for name in ("orphan-A", "orphan-B")}
    trials = []
    for rep in range(reps):
        n = 10_000 + rep
        enqueue(w, [n], ms=8000)
        if wait_until(lambda n=n: w.c.hget("running", n) is not None, 60) is None:
            trials.append({"error": "the job did not start within 60 s"})
            continue
        pid = int(w.c.hget("running", n))
        victim = next(name for name, p in workers.items() if pid in {x.pid for x in procs.tree(p.pid)})
        owner = _owner(w, n)
        time.sleep(1.0)
        w.sigkill(workers[victim], victim)
        killed = time.monotonic()
        w.c.hdel("running", n)
        back = wait_until(lambda n=n, o=owner: _owner(w, n) != o, LEASE * 3, 0.02)
        again = wait_until(lambda n=n: starts(w, n) >= 2, LEASE * 3, 0.02)
        again_s = None if again is None else time.monotonic() - killed
        done = wait_until(lambda n=n: runs(w).get(n, 0) >= 1 and idle(w), 60)
        trials.append(
            {
                "back_in_queue_s": back,
                "running_again_s": again_s,
                "runs": runs(w).get(n, 0),
                "finished": done is not None,
            }
        )
        workers[victim] = w.spawn("worker", f"{victim}-{rep}")  # the supervisor restarts it
    for name, p in workers.items():
        w.stop(p, name)
    ids = [10_000 + i for i in range(reps)]
    out = tally(w, ids)
    out.update(trials=trials, worker_exits=list(w.exits))
    backs = [t["back_in_queue_s"] for t in trials if t.get("back_in_queue_s") is not None]
    out["recover_s"] = max(backs) if len(backs) == len(trials) else None
    return out


def sc_long(w: World, seconds: int) -> dict[str, Any]:
    """(c) A ``--timeout 150`` job longer than the lease, two live workers: runs exactly once."""
    w.start_broker([])
    workers = {name: w.spawn("worker", name) for name in ("long-A", "long-B")}
    n = 20_000
    code, _, out_text = procs.run(
        [
            str(BIN / "bench"),
            "--site",
            SITE,
            "enqueue",
            RUN,
            "--kwargs",
            json.dumps({"n": n, "ms": seconds * 1000}),
            "--timeout",
            "150",
        ],
        w.env(),
        w.bench.root,
        60,
    )
    if code != 0:
        raise RuntimeError(f"bench enqueue failed: {out_text}")
    done = wait_until(lambda: runs(w).get(n, 0) >= 1 and idle(w), seconds + 90, 0.2)
    time.sleep(LEASE / 3 + 6)  # a second run would have started by now
    for name, p in workers.items():
        w.stop(p, name)
    out = tally(w, [n])
    out.update(job_seconds=seconds, starts=starts(w, n), finished=done is not None, worker_exits=list(w.exits))
    return out


def sc_crash(w: World, fsync: str | None, jobs: int) -> dict[str, Any]:
    """(d)/(e) Redis SIGKILLed mid-drain and restarted on the same port and directory."""
    args = ["--appendonly", "yes", "--appendfsync", fsync] if fsync else []
    w.start_broker(args)
    ids = list(range(jobs))
    enqueue(w, ids)
    pool = w.spawn("pool", f"crash-{fsync or 'noaof'}")
    reached = wait_until(lambda: int(w.c.get("count") or 0) >= jobs // 3, 120, 0.01)
    count_at_crash = int(w.c.get("count") or 0)
    w.kill_broker()
    time.sleep(1.0)
    w.start_broker([], fresh=False)
    restarted = time.monotonic()
    extra: dict[str, Any] = {}
    if fsync is None:  # everything in Redis is gone by design: do the workers still take new jobs?
        new_ids = list(range(jobs, jobs + 100))
        time.sleep(3)
        enqueued = time.monotonic()
        enqueue(w, new_ids)
        resumed = wait_until(lambda: bool(set(runs(w)) & set(new_ids)), 60, 0.02)
        settle_s = settle(w, new_ids, 60)
        fresh = tally(w, new_ids)
        extra = {"new_jobs_after_restart": 100, "new_jobs_lost": fresh["lost"]}
        extra["new_jobs_ran_twice"] = fresh["ran_twice"]
        extra["new_jobs_done_s"] = None if settle_s is None else time.monotonic() - enqueued
    else:
        # past the jobs that were running at the crash (they finish without Redis): workers take new ones
        base = int(w.c.get("count") or 0) + RESUMED_AFTER
        resumed = wait_until(lambda: int(w.c.get("count") or 0) >= base, 120, 0.02)
        settle_s = settle(w, ids, LEASE * 3 + 60)
    w.alive(pool, "pool")
    w.stop(pool, "pool")
    out = tally(w, ids)
    if fsync is None:
        out["lost_by_design"] = out["lost"]
    out.update(
        fsync=fsync or "AOF off",
        crash_after_jobs=count_at_crash if reached is not None else None,
        resumed_s=resumed,
        recover_s=(time.monotonic() - restarted) if settle_s is not None else None,
        settled=settle_s is not None,
        worker_exits=list(w.exits),
        **extra,
    )
    return out


def sc_crash_reps(w: World, fsync: str | None, jobs: int, reps: int) -> dict[str, Any]:
    """``sc_crash`` ``reps`` times (a crash loses at most what the last second wrote: repeat it)."""
    trials = []
    for rep in range(reps):
        if rep:
            w.c.flushall()
            w.exits = []
        trials.append(sc_crash(w, fsync, jobs))
        w.stop_broker()
    out: dict[str, Any] = {"reps": reps}
    for key in ("jobs", "lost", "ran_twice", "recorded", "stale_acks", "recovered", "new_jobs_lost"):
        if key in trials[0]:
            out[key] = sum(t[key] for t in trials)
    out["settled"] = all(t["settled"] for t in trials)
    out["resumed_s"] = max((t["resumed_s"] for t in trials if t["resumed_s"] is not None), default=None)
    out["recover_s"] = max((t["recover_s"] for t in trials if t["recover_s"] is not None), default=None)
    out["worker_exits"] = [e for t in trials for e in t["worker_exits"]]
    out["trials"] = trials
    return out


def sc_freeze(w: World, how: str, jobs: int, seconds: float) -> dict[str, Any]:
    """(f) CLIENT PAUSE / kill -STOP of Redis mid-drain, with a long job running throughout."""
    w.start_broker([])
    long_n = 30_000
    enqueue(w, [long_n], ms=int((seconds + 25) * 1000))
    ids = list(range(jobs))
    enqueue(w, ids)
    pool = w.spawn("pool", f"{how}-pool")
    single = w.spawn("worker", f"{how}-worker")
    reached = wait_until(lambda: int(w.c.get("count") or 0) >= jobs // 4, 120, 0.01)
    wait_until(lambda: starts(w, long_n) >= 1, 30)
    count_before = int(w.c.get("count") or 0)
    assert w.broker_proc is not None
    if how == "pause":
        w.b.execute_command("CLIENT", "PAUSE", int(seconds * 1000), "ALL")
        time.sleep(seconds)
    else:
        os.kill(w.broker_proc.pid, signal.SIGSTOP)
        time.sleep(seconds)
        os.kill(w.broker_proc.pid, signal.SIGCONT)
    ended = time.monotonic()
    base = int(w.c.get("count") or 0) + RESUMED_AFTER
    resumed = wait_until(lambda: int(w.c.get("count") or 0) >= base, 60, 0.02)
    short_done = wait_until(lambda: len(runs(w)) >= jobs, LEASE * 3 + 60, 0.1)
    short_done = None if short_done is None else time.monotonic() - ended
    all_ids = [*ids, long_n]
    settle_s = settle(w, all_ids, LEASE * 3 + 60)
    for name, p in ((f"{how}-pool", pool), (f"{how}-worker", single)):
        w.stop(p, name)
    out = tally(w, all_ids)
    out.update(
        freeze=how,
        freeze_s=seconds,
        freeze_after_jobs=count_before if reached is not None else None,
        long_job_starts=starts(w, long_n),
        long_job_runs=runs(w).get(long_n, 0),
        resumed_s=resumed,
        short_jobs_done_s=short_done,
        recover_s=(time.monotonic() - ended) if settle_s is not None else None,
        worker_exits=list(w.exits),
    )
    return out


def _template(w: World, n: int, method: str = ECHO, site: str = SITE) -> dict[str, Any]:
    """A real message of ``method(n=n)``, taken out of its queue (no worker is running)."""
    enqueue(w, [n], site=site, method=method)
    key = w.keys.queue_list(QUEUE, 3)
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
    key = w.keys.queue_list(QUEUE, 3)
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
        rec = next((r for r in records if r.get("raw") == raw or (n is not None and _rec_n(r) == n)), None)
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


def _rec_n(rec: dict[str, Any]) -> Any:
    kwargs = rec.get("kwargs")
    return kwargs.get("n") if isinstance(kwargs, dict) else None


def msg_site(raw: str) -> str:
    try:
        return str(json.loads(raw)["headers"]["site"])
    except Exception:
        return UNKNOWN_SITE


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


def sc_cold(w: World, reps: int) -> dict[str, Any]:
    """(i) Cold shutdown (a second SIGTERM) while a job runs: the job is in exactly one place."""
    w.start_broker([])
    trials = []
    for i in range(reps):
        n = 60_000 + i
        enqueue(w, [n], ms=6000)
        worker = w.spawn("worker", f"cold-{i}")
        if wait_until(lambda n=n: starts(w, n) >= 1, 60) is None:
            trials.append({"error": "the job did not start within 60 s"})
            w.sigkill(worker, f"cold-{i}")
            continue
        time.sleep(0.5)
        os.kill(worker.pid, signal.SIGTERM)
        time.sleep(0.5)
        os.kill(worker.pid, signal.SIGTERM)
        try:
            code, _ = procs.reap(worker, 30)
        except procs.Timeout:
            code = None
        w.c.hdel("running", n)
        in_queue = sum(msg_n(x) == n for x in waiting(w))
        in_flight = sum(msg_n(x) == n for x in w.b.hvals(w.keys.unacked))
        recs = sum((r.get("kwargs") or {}).get("n") == n for r in failed(w))
        again = w.spawn("worker", f"cold-{i}-after")
        ran = wait_until(lambda n=n: runs(w).get(n, 0) >= 1 and idle(w), LEASE * 3 + 30)
        w.stop(again, f"cold-{i}-after")
        trials.append(
            {
                "exit_code": code,
                "in_queue": in_queue,
                "in_flight": in_flight,
                "failed_records": recs,
                "ran_after_restart": ran is not None,
                "failed_records_after_run": sum((r.get("kwargs") or {}).get("n") == n for r in failed(w)),
            }
        )
    out = tally(w, [60_000 + i for i in range(reps)])
    out["one_place"] = sum(
        t.get("in_queue") == 1 and not t.get("in_flight") and not t.get("failed_records") for t in trials
    )
    out.update(trials=trials, worker_exits=list(w.exits))
    return out


def _calls(w: World) -> dict[str, int]:
    stats = w.b.info("commandstats")
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}


def sc_idle(w: World, seconds: float, samples: int) -> dict[str, Any]:
    """Idle cost of one ``bench worker`` (Redis commands/s) and enqueue -> start latency."""
    w.start_broker([])
    worker = w.spawn("worker", "idle")
    enqueue(w, [70_000], method=STAMP)  # wait until it is up and has run a job
    wait_until(lambda: w.c.hget("stamps", 70_000) is not None, 60)
    time.sleep(5)
    before = _calls(w)
    time.sleep(seconds)
    after = _calls(w)
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    delta["info"] = delta.get("info", 0) - 1  # our own INFO
    per_s = {k: round(v / seconds, 2) for k, v in sorted(delta.items(), key=lambda kv: -kv[1]) if v > 0}
    import benchcelery

    benchcelery.init(site=SITE, bench_path=w.bench.root)
    lat = []
    for i in range(samples):
        n = 70_001 + i
        time.sleep(1.0)
        t0 = time.time()
        benchcelery.enqueue(STAMP, n=n)
        if wait_until(lambda n=n: w.c.hget("stamps", n) is not None, 10, 0.005) is not None:
            lat.append((float(w.c.hget("stamps", n)) - t0) * 1000)
    w.stop(worker, "idle")
    lat.sort()
    return {
        "idle_seconds": seconds,
        "commands_per_s": round(sum(delta.values()) / seconds, 2),
        "by_command_per_s": per_s,
        "latency_ms": {
            "median": lat[len(lat) // 2] if lat else None,
            "p90": lat[int(len(lat) * 0.9)] if lat else None,
            "max": lat[-1] if lat else None,
            "n": len(lat),
        },
        "worker_exits": list(w.exits),
    }


# --- the run ---


@dataclass
class Sizes:
    jobs: int
    kill_every: float
    kill_budget: float
    orphan_reps: int
    long_s: int
    crash_jobs: int
    crash_reps: int
    freeze_jobs: int
    freeze_s: float
    retry_reps: int
    cold_reps: int
    idle_s: float
    latency_samples: int


def sizes(quick: bool, jobs: int | None, kill_every: float | None) -> Sizes:
    if quick:
        s = Sizes(600, 2.0, 120, 1, 40, 800, 1, 800, 20, 3, 1, 30, 10)
    else:
        s = Sizes(3000, 2.0, 420, 2, 75, 2000, 3, 2000, 20, 5, 3, 30, 20)
    if jobs:
        s.jobs = jobs
    if kill_every:
        s.kill_every = kill_every
    return s


def run_one(w: World, name: str, s: Sizes) -> dict[str, Any]:
    if name == "kill":
        return sc_kill(w, s.jobs, s.kill_every, s.kill_budget)
    if name == "kill-fast":  # twice as many kills: half the period
        return sc_kill(w, s.jobs, s.kill_every / 2, s.kill_budget)
    if name == "orphan":
        return sc_orphan(w, s.orphan_reps)
    if name == "long":
        return sc_long(w, s.long_s)
    if name == "crash-always":
        return sc_crash_reps(w, "always", s.crash_jobs, s.crash_reps)
    if name == "crash-everysec":
        return sc_crash_reps(w, "everysec", s.crash_jobs, s.crash_reps)
    if name == "noaof":
        return sc_crash(w, None, s.crash_jobs)
    if name in ("pause", "stop"):
        return sc_freeze(w, name, s.freeze_jobs, s.freeze_s)
    if name == "pause-long":
        return sc_freeze(w, "pause", s.freeze_jobs, LEASE + 15)
    if name == "poison":
        return sc_poison(w)
    if name == "retry":
        return sc_retry(w, s.retry_reps)
    if name == "cold":
        return sc_cold(w, s.cold_reps)
    if name == "idle":
        return sc_idle(w, s.idle_s, s.latency_samples)
    raise ValueError(name)


def run(
    quick: bool, only: list[str], jobs: int | None, kill_every: float | None, output: Path, keep: bool, update: bool
) -> int:
    from benchmarks import faults_report

    s = sizes(quick, jobs, kill_every)
    workdir = Path(tempfile.mkdtemp(prefix="benchcelery-faults-"))
    say(f"faults: {'quick' if quick else 'full'} run of {', '.join(only)} in {workdir}")
    w = create_world(workdir)
    results: dict[str, Any] = {}
    began = time.time()
    try:
        for name in only:
            say(f"=== {name} ===")
            t0 = time.monotonic()
            try:
                res = run_one(w, name, s)
            except Exception as exc:  # a broken scenario is reported, the others still run
                res = {"error": f"{type(exc).__name__}: {exc}", "worker_exits": list(w.exits)}
            finally:
                procs.kill_all()
                w.stop_broker()
            res["duration_s"] = round(time.monotonic() - t0, 1)
            results[name] = res
            say("  " + json.dumps({k: v for k, v in res.items() if not isinstance(v, list | dict)}, default=str))
            w.exits = []
            w.c.flushall()
    finally:
        procs.kill_all()
        w.close()
    meta = {
        "started": datetime.fromtimestamp(began, UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "duration_s": round(time.time() - began),
        "mode": "quick" if quick else "full",
        "sizes": s.__dict__,
        "machine": _machine(w),
    }
    md = faults_report.write({"meta": meta, "scenarios": results}, output, update)
    say(f"wrote {md}")
    if keep:
        say(f"kept {workdir}")
    else:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def _machine(w: World) -> dict[str, Any]:
    version = subprocess.run([w.binary, "--version"], capture_output=True, text=True).stdout.strip()
    return {
        "cpus": os.cpu_count(),
        "load_1m": round(os.getloadavg()[0], 2),
        "python": sys.version.split()[0],
        "redis": version,
    }


def main(argv: list[str]) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m benchmarks faults", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smaller sizes (~6 min instead of ~13)")
    p.add_argument("--only", help=f"comma-separated subset of: {', '.join(SCENARIOS)}")
    p.add_argument("--jobs", type=int, help="jobs of the SIGKILL soak (default 3000; --quick 600)")
    p.add_argument("--kill-every", type=float, help="seconds between SIGKILLs of the soak (default 2)")
    p.add_argument("--output", default=str(Path(__file__).resolve().parent / "RELIABILITY.md"))
    p.add_argument("--keep", action="store_true", help="keep the work directory (worker logs)")
    p.add_argument("--update", action="store_true", help="replace only these scenarios' results in the report")
    args = p.parse_args(argv)
    only = [x.strip() for x in args.only.split(",")] if args.only else list(SCENARIOS)
    unknown = set(only) - set(SCENARIOS)
    if unknown:
        print(f"unknown scenario(s): {', '.join(sorted(unknown))}; choose from {', '.join(SCENARIOS)}", file=sys.stderr)
        return 2
    return run(args.quick, only, args.jobs, args.kill_every, Path(args.output), args.keep, args.update)
