"""Reliable delivery against real processes: SIGKILLed workers lose nothing, live jobs keep their
lease, orphans come back, poison never stops a worker, Redis restarts are survived.

The fuller fault suite (3,000 jobs, Redis crashes with AOF, pauses) is `python -m benchmarks faults`.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import time
from typing import Any

import redis

from benchcelery.diagnostics.figures import recovered_counts
from benchcelery.jobs import inspect, registry
from benchcelery.store.server import free_port, start_server, stop_server
from tests.conftest import BenchHandle, pending_total, wait_until

S1 = ("--site", "site1.local")
LEASE = 3  # seconds: renewed every second, orphans back within ~lease + grace + sweep interval


def tallies(bench: BenchHandle) -> dict[str, int]:
    ids = [i.decode() for i in bench.redis.smembers("test:tally")]
    return {i: int(bench.redis.get(f"test:tally:{i}") or 0) for i in ids}


def in_flight(bench: BenchHandle) -> int:
    return int(bench.redis.hlen(f"{bench.prefix}unacked"))


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


def test_sigkill_of_a_worker_pool_during_a_drain_loses_nothing(bench: BenchHandle) -> None:
    bench.set_config(job_lease=LEASE)
    rt = bench.rt()
    total, kills = 240, 3
    import benchcelery

    benchcelery.enqueue_many(
        [{"method": "testapp.tasks.tally", "queue": "short", "run_id": f"r{i}", "seconds": 0.02} for i in range(total)]
    )
    for k in range(1, kills + 1):
        pool = bench.start("worker-pool", "--num-workers", "2", "--queue", "short")
        wait_until(lambda k=k: len(tallies(bench)) >= k * total // (kills + 1), timeout=60, what="progress")
        kill_group(pool)  # main process and pool processes, mid-drain, as `kill -9` of a supervisor group
    bench.start("worker", "--queue", "short")
    wait_until(
        lambda: len(tallies(bench)) == total and not in_flight(bench) and not pending_total(bench),
        timeout=90,
        what="every job run and nothing left in flight",
    )
    runs = tallies(bench)
    assert set(runs) == {f"r{i}" for i in range(total)}  # nothing lost
    # a job runs twice only if it was running when its worker was killed (2 processes per kill)
    assert sum(runs.values()) - total <= kills * 2
    assert sum(recovered_counts(bench.redis, rt.keys, ["short"])["short"].values()) >= 1


def test_a_job_longer_than_its_lease_runs_once(bench: BenchHandle) -> None:
    bench.set_config(job_lease=LEASE)
    rt = bench.rt()
    bench.start("worker", "--queue", "short")
    bench.start("worker", "--queue", "short")  # a second live worker, sweeping for orphans
    bench.enqueue("testapp.tasks.tally", queue="short", run_id="long", seconds=4 * LEASE)
    wait_until(lambda: tallies(bench).get("long"), timeout=60, what="the long job finished")
    wait_until(lambda: not in_flight(bench), what="its lease released")
    assert tallies(bench) == {"long": 1}
    assert not bench.redis.get(rt.keys.stale_acks)
    assert not any(bench.redis.hgetall(rt.keys.recovered("short")).values())


def test_an_orphan_is_back_in_its_queue_after_its_lease_and_runs_on_another_worker(bench: BenchHandle) -> None:
    bench.set_config(job_lease=LEASE)
    rt = bench.rt()
    job = bench.enqueue("testapp.tasks.pid_then_wait", queue="short", key="orphan", flag="go", limit=30)
    first = bench.start("worker", "--queue", "short")
    bench.wait_results("orphan", 1)
    kill_group(first)
    # until the next sweep the job shows as held by a gone worker, then as queued again
    (held,) = inspect.started_jobs(bench.redis, rt.keys)
    assert held.id == job.id
    assert held.extra["lease_expires"] is not None
    bench.start("worker", "--queue", "short")
    # back by its lease (the time it takes is measured by the fault suite's orphan scenario)
    wait_until(lambda: len(bench.results("orphan")) >= 2, timeout=45, what="the orphan running again")
    bench.redis.set("test:go", 1)
    wait_until(lambda: bench.results("orphan")[-1] == "done", what="the orphan finished")
    assert int(bench.redis.hget(rt.keys.recovered("short"), "site1.local") or 0) == 1


def _message(bench: BenchHandle, method: str = "testapp.tasks.record", **kwargs: Any) -> dict[str, Any]:
    from benchcelery.jobs.bulk import envelope
    from benchcelery.jobs.enqueue import _prepare

    rt = bench.rt()
    prepared = _prepare(rt, "site1.local", method, queue="short", kwargs=kwargs)
    return json.loads(envelope(prepared.options, "benchcelery.execute_job", "test", "reply"))


def _with_body(message: dict[str, Any], body: Any) -> str:
    message["body"] = base64.b64encode(json.dumps(body).encode()).decode()
    return json.dumps(message)


def test_poison_elements_are_recorded_and_never_stop_a_worker(bench: BenchHandle) -> None:
    rt = bench.rt()
    (bench.root / "sites" / "site2.local" / "site_config.json").write_bytes(b"\xff\xfe not json")
    site2 = _message(bench, key="poison", value="site2")
    site2["headers"]["site"] = "site2.local"
    site2["headers"]["id"] = "site2.local::broken-config"
    unknown_task = _message(bench, key="poison", value="unknown")
    unknown_task["headers"]["task"] = "no.such.task"
    bad_base64 = _message(bench, key="poison", value="b64")
    bad_base64["body"] = "%%% not base64 %%%"
    poison = [
        "[]",
        "123",
        '"str"',
        "not json at all {",
        '{"hello": "world"}',
        json.dumps(bad_base64),
        json.dumps(unknown_task),
        _with_body(_message(bench, key="poison"), [["positional"], {"key": "poison"}, {}]),
        json.dumps(site2),
    ]
    normal = rt.keys.queue_list("short", 3)
    for element in poison:
        bench.redis.lpush(normal, element)
    # read commands describe what waits, junk included, without a traceback
    listed = bench.run(*S1, "jobs", "list", "--state", "queued")
    assert listed.returncode == 0 and "Traceback" not in listed.stderr
    assert listed.stdout.count("[no site]") >= 5
    shown = bench.run(*S1, "show-pending-jobs", "-v")
    assert shown.returncode == 0 and "Traceback" not in shown.stderr
    # a job whose kwargs use the engine's own parameter names still reaches its method
    clash = _with_body(_message(bench, key="poison"), [[], {"key": "clash", "value": 1, "task": 1, "self": 2}, {}])
    bench.redis.lpush(normal, clash)
    worker = bench.start("worker", "--queue", "short")
    bench.enqueue("testapp.tasks.record", queue="short", key="after", value="alive")
    assert bench.wait_results("after", 1) == ["alive"]
    wait_until(lambda: not in_flight(bench), what="nothing left in flight")
    assert worker.poll() is None, bench.output(worker)
    failed = [inspect.failed_info(r) for r in registry.failed_records(bench.redis, rt.keys, "short", _ids(bench))]
    assert len(failed) == len(poison) + 1  # + the clash job
    reasons = " | ".join(f.extra["exception"] for f in failed)
    for needle in ("Malformed message", "Unknown task", "positional", "site_config.json", "unexpected keyword"):
        assert needle in reasons, reasons
    unknown = next(f for f in failed if "Unknown task" in f.extra["exception"])
    assert unknown.kwargs == {"key": "poison", "value": "unknown"}  # its arguments are kept
    malformed = next(f for f in failed if f.extra.get("raw") == "123")
    # records without a site are in plain `jobs list`, flagged, and can be shown and deleted
    listed = bench.run(*S1, "jobs", "list", "--state", "failed")
    assert malformed.id in listed.stdout and "[no site]" in listed.stdout
    shown = bench.run(*S1, "jobs", "show", malformed.id)
    assert shown.returncode == 0 and "raw: 123" in shown.stdout
    retried = bench.run(*S1, "jobs", "retry", malformed.id)
    assert retried.returncode == 1 and "not a valid message" in retried.stderr
    assert bench.run(*S1, "jobs", "delete", malformed.id).returncode == 0
    assert malformed.id not in _ids(bench)


def _ids(bench: BenchHandle) -> list[str]:
    return registry.failed_ids(bench.redis, bench.rt().keys, "short")


def test_retry_never_deletes_a_newer_failure_record(bench: BenchHandle) -> None:
    rt = bench.rt()
    old = {"job_id": "site1.local::again", "site": "site1.local", "method": "testapp.tasks.fail", "kwargs": {}}
    registry.record_failure(bench.redis, rt.keys, "short", old, limit=10, ttl=3600)
    newer = {**old, "exception": "the retried run failed too"}
    newer.pop("failed_at")
    registry.record_failure(bench.redis, rt.keys, "short", newer, limit=10, ttl=3600)
    assert not registry.remove_failed_record(bench.redis, rt.keys, "short", old)
    (kept,) = registry.failed_records(bench.redis, rt.keys, "short", ["site1.local::again"])
    assert kept["exception"] == "the retried run failed too"
    assert registry.remove_failed_record(bench.redis, rt.keys, "short", kept)


def test_a_worker_survives_redis_being_killed_and_restarted(bench: BenchHandle, tmp_path: Any) -> None:
    port = free_port()
    server = start_server(port, tmp_path)
    try:
        bench.set_config(redis_queue=f"redis://127.0.0.1:{port}")
        mine = redis.Redis(port=port)
        worker = bench.start("worker", "--queue", "short")
        bench.enqueue("testapp.tasks.tally", queue="short", run_id="before")
        wait_until(lambda: mine.sismember("test:tally", "before"), what="a job before the crash")
        server.kill()
        server.wait(10)
        server = start_server(port, tmp_path)
        bench.enqueue("testapp.tasks.tally", queue="short", run_id="after")
        wait_until(lambda: mine.sismember("test:tally", "after"), timeout=60, what="a job after the restart")
        mine.client_pause(3000)  # writes and reads wait 3 s; the worker carries on afterwards
        bench.enqueue("testapp.tasks.tally", queue="short", run_id="paused")
        wait_until(lambda: mine.sismember("test:tally", "paused"), timeout=60, what="a job after a pause")
        assert worker.poll() is None, bench.output(worker)
        assert "Unrecoverable error" not in bench.output(worker)
    finally:
        stop_server(server)


def test_after_a_redis_restart_the_worker_still_renews_and_sweeps(bench: BenchHandle, tmp_path: Any) -> None:
    """The event loop's turn stamp is registered again with the new connection (Celery cancels the
    old connection's timer entries): otherwise, a lease after the reconnect, the lease thread took
    the loop for stalled and neither renewed nor swept, and a take whose ack the crash lost stayed
    in flight for good."""
    port = free_port()
    server = start_server(port, tmp_path)
    try:
        bench.set_config(redis_queue=f"redis://127.0.0.1:{port}", job_lease=LEASE)
        mine = redis.Redis(port=port)
        worker = bench.start("worker", "--queue", "short")
        bench.enqueue("testapp.tasks.tally", queue="short", run_id="before")
        wait_until(lambda: mine.sismember("test:tally", "before"), what="a job before the crash")
        server.kill()
        server.wait(10)
        server = start_server(port, tmp_path)
        bench.enqueue("testapp.tasks.tally", queue="short", run_id="after")
        wait_until(lambda: mine.sismember("test:tally", "after"), timeout=60, what="a job after the restart")
        time.sleep(LEASE + 3)  # longer than a lease since the reconnect
        # a take nobody renews (as when Redis lost its ack): the worker's sweeper puts it back, it runs
        rt = bench.rt()
        from benchcelery.broker.delivery import Delivery

        # (on a queue this worker does not consume, so it cannot take the job before the dead taker)
        bench.enqueue("testapp.tasks.tally", queue="long", run_id="orphan")
        taken = Delivery(mine, rt.keys, LEASE).fetch(["long"], "gone|1")
        assert taken is not None
        wait_until(lambda: mine.hget(rt.keys.recovered("long"), "site1.local"), timeout=30, what="the orphan recovered")
        output = bench.output(worker)
        assert "event loop has not turned" not in output, output
        assert worker.poll() is None, output
    finally:
        stop_server(server)


def test_a_stalled_worker_cannot_acknowledge_a_job_another_worker_now_holds(bench: BenchHandle) -> None:
    """A worker frozen past its lease (SIGSTOP of its main process) loses the job to another worker;
    when it thaws, its late finish does not remove the new holder's job, and is counted."""
    bench.set_config(job_lease=LEASE)
    rt = bench.rt()
    stalled = bench.start("worker", "--queue", "short")
    bench.enqueue("testapp.tasks.tally", queue="short", run_id="stall", seconds=3 * LEASE)
    wait_until(lambda: in_flight(bench), what="the job taken")
    os.kill(stalled.pid, signal.SIGSTOP)  # the main process only: its pool process runs on
    try:
        bench.start("worker", "--queue", "short")
        wait_until(lambda: bench.redis.hget(rt.keys.recovered("short"), "site1.local"), timeout=30, what="recovery")
    finally:
        os.kill(stalled.pid, signal.SIGCONT)
    wait_until(lambda: bench.redis.get(rt.keys.stale_acks), timeout=30, what="the late finish counted")
    assert in_flight(bench) == 1  # the new holder still has it
    wait_until(lambda: tallies(bench).get("stall") == 2 and not in_flight(bench), timeout=30, what="second run done")
    assert int(bench.redis.get(rt.keys.stale_acks) or 0) == 1
    assert "lease of job" in bench.output(stalled) and not pending_total(bench)


def _consuming_channel(bench: BenchHandle, got: list[Any]) -> Any:
    """A channel of the worker's transport consuming `default`, in this process (no Celery worker)."""
    conn = bench.rt().app.connection_for_read()
    channel = conn.default_channel
    channel.basic_consume("default", False, got.append, "test")
    return conn, channel


def _poll(channel: Any) -> None:
    """One turn of the worker's event loop for this channel: send the poll, read its reply (with
    the connection kombu's poller gives the channel's client when it registers it)."""
    client = channel.client
    if client.connection is None:
        client.connection = client.connection_pool.get_connection()
    channel._brpop_start()
    channel._brpop_read()


def test_an_ack_whose_poll_never_reached_redis_is_sent_again(bench: BenchHandle) -> None:
    """A finished job's ack rides with the next poll. When that write fails, or the connection was
    closed by the server before it (its replies never come), the ack goes back to the pending ones
    and is applied over a new connection: the job leaves the in-flight hash, not held (and renewed)
    for good."""
    bench.enqueue("testapp.tasks.noop")
    bench.enqueue("testapp.tasks.noop")
    got: list[Any] = []
    conn, channel = _consuming_channel(bench, got)
    try:
        for fail_in in ("send", "read"):
            _poll(channel)
            tag = got.pop().delivery_tag
            channel.basic_ack(tag)  # in the event loop: it waits for the next poll
            assert in_flight(bench) == 1 and set(channel.held()) == {tag}
            connection = channel.client.connection
            if fail_in == "send":
                connection.send_packed_command = _raise_connection_error
                with_error(channel._brpop_start)
                del connection.send_packed_command
            else:  # the server dropped the connection (a Redis restart, a timeout) before the poll
                bench.redis.client_kill_filter(_type="normal", skipme=True)
                with_error(lambda: _poll(channel))
            assert in_flight(bench) == 1 and set(channel.held()) == {tag}  # still leased, still to ack
            channel.flush_acks()  # what the lease thread does for a channel whose connection was lost
            assert in_flight(bench) == 0 and not channel.held()
        assert not bench.redis.get(f"{bench.prefix}stale_acks")
    finally:
        conn.release()


def test_a_taken_job_not_running_here_goes_back_when_the_connection_is_lost(bench: BenchHandle) -> None:
    """On a lost connection Celery drops what it prefetched but did not start: the transport puts
    those jobs back in their queue at once (a running one would keep its lease)."""
    bench.enqueue("testapp.tasks.noop")
    got: list[Any] = []
    conn, channel = _consuming_channel(bench, got)
    try:
        _poll(channel)
        assert got and in_flight(bench) == 1 and pending_total(bench) == 0
        assert channel.qos.restore_unacked() == []
        assert in_flight(bench) == 0 and pending_total(bench) == 1
    finally:
        conn.release()


def _raise_connection_error(*args: Any, **kwargs: Any) -> None:
    raise redis.ConnectionError("connection closed (test)")


def with_error(call: Any) -> None:
    try:
        call()
    except (redis.ConnectionError, OSError):
        return
    raise AssertionError(f"{call} did not fail")


def test_owner_tokens_are_unique_and_new_in_a_forked_child() -> None:
    from benchcelery.broker.delivery import new_token, token_owner

    tokens = {new_token("w1@host") for _ in range(1000)}
    assert len(tokens) == 1000 and {token_owner(t) for t in tokens} == {"w1@host"}
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child's tokens must not repeat the parent's (same counter, same base)
        os.write(write, new_token("w1@host").encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read, 200).decode()
    assert child not in tokens and child.split("|")[1].split("-")[0] != next(iter(tokens)).split("|")[1].split("-")[0]


def test_the_poll_write_is_packed_as_redis_py_packs_it() -> None:
    from redis.connection import Connection

    from benchcelery.bench.keys import Keys
    from benchcelery.broker.delivery import Delivery
    from benchcelery.broker.poll import _packed

    delivery = Delivery(redis.Redis(), Keys.from_prefix("bc:t:"))  # no connection: it only builds commands
    commands = [
        ("HINCRBY", "bc:t:durations:default", "app.tasks.run\x1f0", 1),
        ("HINCRBYFLOAT", "bc:t:durations:default", "app.tasks.run\x1fsum", repr(0.004211)),
        ["EVALSHA", delivery._fetch.sha, 2, "bc:t:unacked", "bc:t:wake:ü", "w@h|x-2", 30, 1, 1, "t-1", "w@h|x-1"],
        ["BRPOP", "bc:t:wake:short", "bc:t:wake:default", 0.05],
    ]
    assert b"".join(_packed(commands)) == b"".join(Connection().pack_commands(commands))


def test_a_job_held_ahead_behind_a_long_one_goes_back_to_an_idle_worker(bench: BenchHandle) -> None:
    """A worker holds one job ahead of its pool (worker/lookahead.py); one that waits behind a long
    job goes back to its queue and an idle worker runs it, once, while the long job still runs."""
    first = bench.start("worker", "--queue", "short")
    bench.enqueue("testapp.tasks.wait_for_flag", queue="short", key="long", flag="go", value="long")
    bench.wait_results("long", 1)  # running
    bench.enqueue("testapp.tasks.tally", queue="short", run_id="next", seconds=0)
    wait_until(lambda: "put back in its queue" in bench.output(first), what="the held job given back")
    assert in_flight(bench) == 1 and pending_total(bench) == 1  # in its queue again, not held
    bench.start("worker", "--queue", "short")
    wait_until(lambda: tallies(bench).get("next") == 1, what="the other worker ran it")
    assert bench.results("long") == [{"start": "long"}]  # ... while the long job still ran
    bench.redis.set("test:go", 1)
    bench.wait_results("long", 2)
    wait_until(lambda: not in_flight(bench) and not pending_total(bench), what="nothing left")
    assert tallies(bench) == {"next": 1}


def test_a_warm_shutdown_puts_a_job_held_ahead_back_and_runs_it_once(bench: BenchHandle) -> None:
    bench.start("worker", "--queue", "short")
    bench.enqueue("testapp.tasks.sleep_then_record", queue="short", key="long", seconds=2, value="long")
    bench.wait_results("long", 1)
    bench.enqueue("testapp.tasks.tally", queue="short", run_id="next", seconds=0)
    wait_until(lambda: in_flight(bench) == 2, what="the next job held ahead")
    proc = bench.procs[-1]
    proc.send_signal(signal.SIGTERM)  # warm: the long job finishes, the held one goes back
    assert proc.wait(30) == 0
    assert bench.results("long") == [{"start": "long"}, "long"]
    assert tallies(bench) == {} and pending_total(bench) == 1 and not in_flight(bench)
    bench.start("worker", "--queue", "short", "--burst")
    wait_until(lambda: tallies(bench).get("next") == 1, what="the held job ran")
    wait_until(lambda: bench.procs[-1].poll() == 0, what="the burst worker exited")
    assert tallies(bench) == {"next": 1}


def test_finished_jobs_stop_showing_as_started_when_their_workers_go_idle(bench: BenchHandle) -> None:
    """A finished job's ack is applied before its worker blocks on the wake lists: an ack sent
    with that blocking poll made its worker wait inside the poll (up to 1 s, its whole event loop
    stopped), and the job showed as started meanwhile."""
    import benchcelery

    bench.start("worker-pool", "--num-workers", "2")
    bench.start("worker-pool", "--num-workers", "2")
    rt = bench.rt()
    wait_until(lambda: bench.redis.zcard(rt.keys.workers) == 2, what="two workers")
    for batch in range(4):
        job = {"method": "testapp.tasks.tally", "queue": "short", "seconds": 0.05}
        benchcelery.enqueue_many([{**job, "run_id": f"{batch}-{i}"} for i in range(30)])
        wait_until(lambda batch=batch: len(tallies(bench)) == 30 * (batch + 1), timeout=60, what="the batch ran")
        wait_until(lambda: not in_flight(bench), timeout=0.6, what="every ack applied")
    assert sum(tallies(bench).values()) == 120
