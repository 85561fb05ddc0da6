"""``python -m benchmarks field [--quick] [--reps N] [--only NAMES]``: benchcelery against the field.

Every Python job queue on Redis that the ``bench`` extra installs (plus ``pip install --no-deps
taskiq-redis``: its pin of redis-py is below ours, and it runs on ours) (huey, taskiq list and stream
brokers, saq, dramatiq, arq, plain Celery, rq), each with the same no-op job (one ``INCR`` of a
counter on the same Redis), on one private Redis, repetitions interleaved across configurations:

- **drain**: N jobs pre-filled, the worker spawned (in burst mode where the peer has one, else
  stopped with SIGTERM once the counter reaches N); jobs/s from spawn to the last job (and from
  the first job to the last); worker CPU per job (rusage of the whole tree, or the tree's CPU read
  just before the stop when more is seen there); Redis commands per job (``INFO commandstats``
  reset after the fill: run + completion, the job's INCR and the harness's polling GETs removed)
  and Redis CPU per job (``used_cpu_sys + used_cpu_user``); spawn to first job for burst workers.
- **idle**: the worker started on one job; once it ran, a settle, then RSS of the whole tree, and
  enqueue-to-start latency (``benchmarks.peers.probe latency``) against that idle worker.
- **enqueue**: single (one call per job) and bulk (where the peer has a bulk form) from one fresh
  process, 50 warm-up jobs not timed.

Writes ``benchmarks/FIELD.md`` + ``field.json`` (``--quick``: ``FIELD-quick.md`` / ``field-quick.json``).
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from benchmarks import apps, env, machine, procs
from benchmarks.common import say
from benchmarks.peers import CONFIGS, SYSTEMS, Config, available, system
from benchmarks.redis_cost import reset, snapshot

POLL = 0.005
STOP_WAIT = 20.0
OUT_DIR = Path(__file__).resolve().parent


@dataclass
class FieldPlan:
    quick: bool
    reps: int
    drain_n: int
    enqueue_n: int
    latency_n: int
    latency_budget: float
    idle_settle: float
    # Slow configurations get fewer repetitions so a full run stays near half an hour.
    capped: dict[str, int] = field(default_factory=dict)

    def reps_for(self, name: str) -> int:
        return min(self.reps, self.capped.get(name, self.reps))


def make_plan(quick: bool, reps: int | None) -> FieldPlan:
    if quick:
        return FieldPlan(True, reps or 1, 2_000, 2_000, 100, 15.0, 2.0)
    return FieldPlan(False, reps or 3, 10_000, 10_000, 200, 30.0, 3.0, {"rq worker (fork)": 1})


def _probe(world: env.Env, args: list[str], timeout: float) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "benchmarks.peers.probe", *args]
    code, _, out = procs.run(cmd, world.child_env(), world.workdir, timeout)
    if code != 0:
        raise RuntimeError(f"probe {' '.join(args)} failed ({code}):\n{out[-2000:]}")
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _tree_cpu(pid: int) -> float:
    """CPU seconds of a live tree: every process's own time plus what its reaped children used."""
    total = 0.0
    for p in procs.tree(pid):
        try:
            t = p.cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total


def _log(world: env.Env, stem: str) -> Path:
    path = world.workdir / "logs" / f"{stem.replace(' ', '_').replace('/', '_')}.log"
    path.parent.mkdir(exist_ok=True)
    return path


def _exited(pid: int) -> bool:
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _finish(proc: Any, burst: bool) -> tuple[int | None, Any]:
    """Wait for a burst worker's exit, or stop a worker (SIGTERM); a worker still running 20 s
    later is killed (its CPU is then what the tree showed just before)."""
    try:
        return procs.reap(proc, 60) if burst else procs.stop(proc, STOP_WAIT)
    except procs.Timeout:
        return None, None


def drain_once(world: env.Env, cfg: Config, n: int) -> dict[str, Any]:
    r = world.redis
    world.flush()
    _probe(world, ["fill", system(cfg.system).fill, str(n)], timeout=120 + n / 100)
    cpu0 = reset(r)
    log = _log(world, f"field-{cfg.name}")
    started = time.perf_counter()
    proc = procs.spawn(cfg.command(world, burst=cfg.has_burst), world.child_env(), cfg.cwd(world), log)
    first_at: float | None = None
    polls = 0
    while True:
        count = int(r.get(apps.COUNTER) or 0)
        polls += 1
        now = time.perf_counter()
        if first_at is None and count:
            first_at, first_count = now, count
        if count >= n:
            last_at = now
            break
        if _exited(proc.pid):
            code, _ = procs.reap(proc, 5)
            raise RuntimeError(f"{cfg.name} exited ({code}) after {count}/{n} jobs:\n{procs.log_tail(log)}")
        if now - started > 60 + n / 10:
            procs.kill_group(proc)
            procs.reap(proc, 10)
            raise procs.Timeout(f"{cfg.name}: {count}/{n} jobs after {now - started:.0f} s:\n{procs.log_tail(log)}")
        time.sleep(POLL)
    seen_cpu = _tree_cpu(proc.pid)
    code, usage = _finish(proc, cfg.has_burst)
    calls, cpu1 = snapshot(r)
    calls["incrby"] -= n  # the job's own INCR (redis-py sends INCRBY key 1)
    calls["get"] -= polls
    calls = +calls
    cpu = max(seen_cpu, (usage.ru_utime + usage.ru_stime) if usage else 0.0)
    assert first_at is not None
    return {
        "config": cfg.name,
        "n": n,
        "e2e_rate": n / (last_at - started),
        "steady_rate": (n - first_count) / (last_at - first_at) if last_at > first_at else None,
        "spawn_to_first_s": first_at - started if cfg.has_burst else None,
        "cpu_us_per_job": cpu / n * 1e6,
        "redis_commands_per_job": sum(calls.values()) / n,
        "redis_cpu_us_per_job": (cpu1 - cpu0) / n * 1e6,
        "breakdown": {k: round(v / n, 2) for k, v in calls.most_common(12) if v / n >= 0.01},
        "exit_code": code,
    }


def idle_once(world: env.Env, cfg: Config, plan: FieldPlan) -> dict[str, Any]:
    """RSS of an idle worker tree, then enqueue-to-start latency against it."""
    r = world.redis
    world.flush()
    sysm = system(cfg.system)
    _probe(world, ["fill", sysm.fill, "1"], timeout=60)
    log = _log(world, f"field-idle-{cfg.name}")
    started = time.perf_counter()
    proc = procs.spawn(cfg.command(world, burst=False), world.child_env(), cfg.cwd(world), log)
    try:
        while int(r.get(apps.COUNTER) or 0) < 1:
            if proc.poll() is not None:
                raise RuntimeError(f"{cfg.name} exited ({proc.returncode}) before a job:\n{procs.log_tail(log)}")
            if time.perf_counter() - started > 60:
                raise procs.Timeout(f"{cfg.name} ran no job within 60 s:\n{procs.log_tail(log)}")
            time.sleep(0.01)
        time.sleep(plan.idle_settle)
        mem = procs.memory_of(proc.pid)
        r.config_set("notify-keyspace-events", "K$")
        try:
            args = ["latency", sysm.single, str(plan.latency_n), "--budget", str(plan.latency_budget)]
            lat = _probe(world, args, timeout=plan.latency_budget + 60)
        finally:
            r.config_set("notify-keyspace-events", "")
    finally:
        _finish(proc, burst=False)
    return {
        "config": cfg.name,
        "procs": mem.procs,
        "rss_tree_mb": mem.rss_tree / 2**20,
        "pss_tree_mb": mem.pss_tree / 2**20 if mem.pss_tree is not None else None,
        "latency_median_ms": lat["median_ms"],
        "latency_p99_ms": lat["p99_ms"],
        "latency_samples": lat["n"],
    }


def enqueue_once(world: env.Env, method: str, n: int) -> dict[str, Any]:
    world.flush()
    out = _probe(world, ["enqueue", method, str(n)], timeout=60 + n / 20)
    world.flush()
    return out


def _attempt(results: list[dict[str, Any]], what: str, base: dict[str, Any], fn: Any, *args: Any) -> None:
    say(f"{what} (rep {base['rep'] + 1})")
    try:
        res = fn(*args)
    except (RuntimeError, procs.Timeout) as exc:
        say(f"  FAILED: {str(exc)[:1500]}")
        results.append({**base, "error": str(exc)[:3000]})
        return
    res.update(base)
    say("  " + ", ".join(f"{k} {v:.4g}" for k, v in res.items() if isinstance(v, float)))
    results.append(res)


def measure(world: env.Env, plan: FieldPlan, configs: list[Config]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {"drain": [], "idle": [], "enqueue": []}
    keys = {c.system for c in configs}
    systems = [s for s in SYSTEMS if s.key in keys]
    for rep in range(plan.reps):
        for cfg in configs:
            if rep < plan.reps_for(cfg.name):
                base = {"config": cfg.name, "system": cfg.system, "rep": rep}
                _attempt(out["drain"], f"drain {plan.drain_n:,}: {cfg.name}", base, drain_once, world, cfg,
                         plan.drain_n)
        for cfg in configs:
            base = {"config": cfg.name, "system": cfg.system, "rep": rep}
            _attempt(out["idle"], f"idle RSS + enqueue->start: {cfg.name}", base, idle_once, world, cfg, plan)
        for s in systems:
            for kind, method in (("single", s.single), ("bulk", s.bulk)):
                if method:
                    base = {"system": s.key, "kind": kind, "method": method, "rep": rep}
                    _attempt(out["enqueue"], f"enqueue {kind} x{plan.enqueue_n:,}: {s.label}", base, enqueue_once,
                             world, method, plan.enqueue_n)
    return out


def commands(world: env.Env, configs: list[Config]) -> dict[str, dict[str, str]]:
    """The exact command lines (venv paths shortened to the executable's name)."""
    def short(cmd: list[str]) -> str:
        return " ".join([Path(cmd[0]).name, *cmd[1:]]).replace(world.url, "$REDIS_URL")

    out = {}
    for cfg in configs:
        entry = {"worker": short(cfg.command(world, burst=False))}
        if cfg.has_burst:
            entry["burst"] = short(cfg.command(world, burst=True))
        out[cfg.name] = entry
    return out


def _on_signal(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str]) -> int:
    from benchmarks import field_report

    parser = argparse.ArgumentParser(prog="python -m benchmarks field", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2,000 jobs, one repetition; writes FIELD-quick.md")
    parser.add_argument("--reps", type=int, help="interleaved repetitions (default 3; --quick 1)")
    names = ", ".join(c.name for c in CONFIGS)
    parser.add_argument("--only", help=f"comma-separated configurations or systems: {names}")
    parser.add_argument("--output-dir", default=str(OUT_DIR))
    parser.add_argument("--keep", action="store_true", help="keep the temporary work directory and worker logs")
    args = parser.parse_args(argv)
    plan = make_plan(args.quick, args.reps)
    names = [x.strip() for x in args.only.split(",")] if args.only else None
    configs, skipped = available(names)
    for line in skipped:
        say(line)
    if not configs:
        say("nothing to run")
        return 2
    signal.signal(signal.SIGTERM, _on_signal)
    atexit.register(procs.kill_all)
    started = time.time()
    world = env.create(keep=args.keep)
    try:
        keys = {c.system for c in configs}
        data: dict[str, Any] = {
            "meta": {
                "started": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
                "argv": ["python", "-m", "benchmarks", "field", *argv],
                "plan": asdict(plan),
                "machine": machine.describe(world.redis, world.redis_binary),
                "versions": {s.label: s.versions() for s in SYSTEMS if s.key in keys},
                "skipped": skipped,
                "commands": commands(world, configs),
            }
        }
        data.update(measure(world, plan, configs))
    except KeyboardInterrupt:
        say("interrupted: no results written")
        return 130
    finally:
        procs.kill_all()
        world.close()
    data["meta"]["duration_s"] = time.time() - started
    stem = "field-quick" if plan.quick or names else "field"
    md, js = field_report.write(data, Path(args.output_dir), stem)
    say(f"wrote {md} and {js}")
    for t in field_report.targets(data):
        say(f"  {t.verdict:4}  {t.name}: {field_report.fmt(t.value)} (target {t.target})")
    return 0
