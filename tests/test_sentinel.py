"""Redis Sentinel for real: a master, a replica and three sentinels on 127.0.0.1 (private ports),
a `bench worker-pool` and a `bench schedule` draining jobs; the master is SIGKILLed mid-drain.

Jobs count their runs in a separate Redis that never fails over (tests/apps/haapp), so lost and
doubled runs are counted exactly.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from benchcelery.bench.keys import Keys
from benchcelery.deploy.scaffold import add_app
from benchcelery.jobs.inspect import waiting_lists
from benchcelery.store.server import free_port, start_server, stop_server
from tests.conftest import TESTS, BenchHandle, RedisServer, make_bench, wait_until

SERVICE = "mymaster"
DOWN_AFTER_MS = 2000
RESUME_BOUND = 15.0  # s from the kill of the master to the first job fetched from the new master


@dataclass
class Cluster:
    """Data nodes (the first is the master at start) and three sentinels, all on 127.0.0.1."""

    workdir: Path
    data_ports: list[int]
    sentinel_ports: list[int]
    procs: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return "sentinel://" + ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports) + f"/{SERVICE}/0"

    def sentinel(self, i: int = 0) -> redis.Redis:
        # No retries: a dead sentinel must not slow down the polling (redis-py backs off 1 + 2 + 4 s).
        return redis.Redis(port=self.sentinel_ports[i], socket_timeout=1, retry=Retry(NoBackoff(), 0))

    def master_port(self) -> int | None:
        for i in range(len(self.sentinel_ports)):
            try:
                addr = self.sentinel(i).execute_command("SENTINEL", "get-master-addr-by-name", SERVICE)
                return int(addr[1])
            except redis.RedisError:
                continue
        return None

    def kill(self, port: int) -> None:
        self.procs[port].send_signal(signal.SIGKILL)
        self.procs[port].wait(5)

    def stop(self) -> None:
        for proc in self.procs.values():
            stop_server(proc, timeout=3)


def new_cluster(workdir: Path, replicas: int = 1) -> Cluster:
    return Cluster(workdir, [free_port() for _ in range(1 + replicas)], [free_port() for _ in range(3)])


def start_layout(cluster: Cluster, bench: BenchHandle, admin_password: str | None = None) -> None:
    """Start the nodes and sentinels from the files `bench setup redis` writes for the bench (the
    production layout), with a shorter failure detection for the test."""
    nodes = ",".join(f"127.0.0.1:{p}" for p in cluster.data_ports)
    result = bench.run("setup", "redis", "--nodes", nodes)
    assert result.returncode == 0, result.stderr
    folder = bench.root / "config" / "sentinel"
    try:
        for i, port in enumerate(cluster.data_ports, 1):
            conf = folder / f"redis_queue_node{i}.conf"
            # A replica's first full sync starts at once (Redis waits 5 s by default for others).
            conf.write_text(conf.read_text() + "repl-diskless-sync-delay 0\n")
            data = bench.root / "config" / "pids" / f"redis_queue_node{i}"
            data.mkdir(parents=True)
            cluster.procs[port] = start_server(port, data, config_file=conf)
        for i, port in enumerate(cluster.sentinel_ports, 1):
            conf = folder / f"sentinel_node{i}.conf"
            text = conf.read_text().replace(" 5000\n", f" {DOWN_AFTER_MS}\n").replace(" 60000\n", " 6000\n")
            assert f"down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}" in text
            conf.write_text(text)
            data = bench.root / "config" / "pids" / f"sentinel_node{i}"
            data.mkdir(parents=True)
            cluster.procs[port] = start_server(port, data, config_file=conf, args=["--sentinel"])
        in_sync = [redis.Redis(port=p, password=admin_password) for p in cluster.data_ports[1:]]
        wait_until(
            lambda: all(r.info("replication")["master_link_status"] == "up" for r in in_sync), 20, what="replica sync"
        )

        def sentinels_ready() -> bool:
            for i in range(3):
                facts = cluster.sentinel(i).sentinel_master(SERVICE)
                if int(facts["num-other-sentinels"]) != 2 or int(facts["num-slaves"]) != len(in_sync):
                    return False
            return True

        wait_until(sentinels_ready, 30, 0.2, what="sentinels know each other and the replicas")
    except BaseException:
        cluster.stop()
        raise


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = new_cluster(tmp_path / "cluster")
    yield c
    c.stop()


def ha_bench(bench_path: Path, cluster: Cluster, tally: RedisServer, **config: object) -> BenchHandle:
    """A bench on the Sentinel cluster with haapp installed; runs are counted in ``tally`` db 3."""
    b = make_bench(bench_path, cluster.url)
    shutil.copytree(TESTS / "apps" / "haapp", b.root / "apps" / "haapp", ignore=shutil.ignore_patterns("__pycache__"))
    add_app(b, "haapp")
    (b.root / "sites" / "apps.txt").write_text("testapp\nhaapp\n")
    b.update_config(
        {
            "tally_redis": f"{tally.url}/3",
            # A short lease brings back quickly a job whose holder lost it in the failover (delivery.py).
            "job_lease": 10,
            **config,
        }
    )
    return BenchHandle(b, redis.Redis(port=cluster.data_ports[0]), cluster.url)


@pytest.fixture
def tally(redis_server: RedisServer) -> redis.Redis:
    r = redis.Redis(port=redis_server.port, db=3)
    r.flushdb()
    return r


ENQUEUER = """
import sys, time, redis, benchcelery
benchcelery.init(site="site1.local", bench_path=sys.argv[1])
tally = redis.Redis.from_url(sys.argv[2])
n = int(sys.argv[3])
while not tally.exists("ha:stop"):
    try:
        benchcelery.enqueue("haapp.tasks.count", queue="short", n=n, seconds=0.01)
    except Exception as exc:
        tally.rpush("ha:enqueue:errors", repr(exc)[:200])
        time.sleep(0.05)
    else:
        tally.sadd("ha:accepted", n)
    n += 1
    time.sleep(0.01)
"""


def test_failover_mid_drain_loses_nothing(
    tmp_path: Path, cluster: Cluster, redis_server: RedisServer, tally: redis.Redis
) -> None:
    bench = ha_bench(
        tmp_path / "bench",
        cluster,
        redis_server,
        scheduler_interval=1,
        scheduler_tick_interval=1,
        enqueue_wait_replicas=1,
        enqueue_wait_timeout=1,
    )
    # The bench's ACL on every node: workers log in as the bench user, replicas and sentinels as theirs.
    # The default user gets a password too, so replication and the sentinels work only through
    # their own ACL users.
    users = bench.run("create-rq-users", "--use-rq-auth", "--set-admin-password")
    assert users.returncode == 0, users.stderr
    admin = users.stdout.split("export RQ_ADMIN_PASWORD=", 1)[1].split()[0]
    start_layout(cluster, bench, admin)
    try:
        _failover_mid_drain(bench, cluster, tally)
    finally:
        tally.set("ha:stop", 1)
        bench.stop_all()


def _failover_mid_drain(bench: BenchHandle, cluster: Cluster, tally: redis.Redis) -> None:
    import benchcelery

    benchcelery.init(site="site1.local", bench_path=str(bench.root))
    first = 200
    benchcelery.enqueue_many(
        [{"method": "haapp.tasks.count", "queue": "short", "n": i, "seconds": 0.01} for i in range(first)]
    )
    tally.sadd("ha:accepted", *range(first))
    workers = bench.start("worker-pool", "--num-workers", "2")
    beat = bench.start("schedule")
    enqueuer = subprocess.Popen(
        [sys.executable, "-c", ENQUEUER, str(bench.root), f"{bench_tally_url(tally)}", "100000"],
        cwd=bench.root,
        env=bench.env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    bench.procs.append(enqueuer)  # type: ignore[arg-type]
    wait_until(lambda: int(tally.get("ha:ran") or 0) >= first // 2, 60, what="half of the first jobs ran")
    wait_until(lambda: tally.llen("ha:ticks") >= 1, 20, what="a scheduled run before the kill")

    old_master = cluster.master_port()
    assert old_master == cluster.data_ports[0]
    assert relay_receives(bench, "before")
    before = json.loads(bench.run("--site", "all", "doctor", "-f", "json").stdout)["sentinel"]
    assert before["master"] == f"127.0.0.1:{old_master}" and before["quorum_check"].startswith("OK 3 usable")
    assert [(r["address"], r["healthy"]) for r in before["replicas"]] == [(f"127.0.0.1:{cluster.data_ports[1]}", True)]
    accepted_at_kill = tally.scard("ha:accepted")
    # The master's host is lost: its Redis and the sentinel beside it (the first one clients ask).
    killed_at = time.time()
    cluster.kill(old_master)
    cluster.kill(cluster.sentinel_ports[0])

    new_master = wait_until(
        lambda: (p := cluster.master_port()) != old_master and p, 20, 0.1, what="the sentinels promote the replica"
    )
    promoted_after = time.time() - killed_at
    # Work resumed: more jobs finished after the kill than the pool could hold at the kill
    # (2 processes), so at least one was fetched from the new master.
    resumed = wait_until(lambda: _nth_done_after(tally, killed_at, 3), 40, 0.1, what="work resumes")
    resumed_after = resumed - killed_at
    wait_until(
        lambda: any(float(t) > resumed for t in tally.lrange("ha:ticks", 0, -1)), 20, 0.1, what="scheduler runs again"
    )
    # Enqueue works again, on the new master (with no replica left, each waits out its WAIT timeout).
    wait_until(lambda: tally.scard("ha:accepted") >= accepted_at_kill + 3, 30, what="enqueue works again")
    tally.set("ha:stop", 1)
    enqueuer.wait(30)

    # No restart: the worker pool and the scheduler are the processes started before the kill.
    assert workers.poll() is None and beat.poll() is None, bench.output(workers)[-3000:]
    accepted = {int(x) for x in tally.smembers("ha:accepted")}
    wait_until(
        lambda: accepted <= {int(x) for x in tally.smembers("ha:ran:ids")},
        60,
        0.2,
        what="every accepted job ran",
    )
    ran_ids = {int(x) for x in tally.smembers("ha:ran:ids")}
    runs = int(tally.get("ha:ran") or 0)
    lost = accepted - ran_ids
    twice = runs - len(ran_ids)
    print(
        f"\nfailover: promoted {promoted_after:.1f} s after the kill, work resumed after {resumed_after:.1f} s; "
        f"{len(accepted)} accepted, {len(lost)} lost, {twice} ran twice, "
        f"{tally.llen('ha:enqueue:errors')} enqueue calls refused during the failover"
    )
    assert not lost
    assert resumed_after <= RESUME_BOUND

    # Read commands answer from the promoted replica, in new processes and without restarting anything.
    shown = bench.run("--site", "all", "show-pending-jobs", "-f", "json")
    assert shown.returncode == 0, shown.stderr
    doctor = bench.run("--site", "all", "doctor", "-f", "json")
    assert doctor.returncode in (0, 1), doctor.stderr
    report = json.loads(doctor.stdout)
    assert report["redis"]["connected"]
    assert any(w["alive"] for w in report["workers"])
    assert new_master in cluster.data_ports[1:]
    assert report["sentinel"]["master"] == f"127.0.0.1:{new_master}"
    with pytest.raises(redis.AuthenticationError):  # the ACL is in force on the promoted node too
        redis.Redis(port=new_master).get("x")
    # The old master is gone: no replica is left to fail over to, and doctor says so.
    assert "Sentinel: no healthy replica; if the master is lost, the queue is lost with it" in report["problems"]
    assert doctor.returncode == 1
    assert relay_receives(bench, "after")  # the relay's client (a new one per reconnect) finds the new master
    text = bench.run("--site", "all", "doctor").stdout
    assert f"Sentinel {SERVICE}: master 127.0.0.1:{new_master}; 2 of 3 sentinels answer" in text
    # A second sentinel lost: no failover could be authorised any more, and doctor says so.
    cluster.kill(cluster.sentinel_ports[1])
    problems = json.loads(bench.run("--site", "all", "doctor", "-f", "json").stdout)["problems"]
    assert "Sentinel: only 1 of 3 sentinels answer; a failover needs 2" in problems


def relay_receives(bench: BenchHandle, tag: str) -> bool:
    """The realtime relay's Redis client (connection.make_async_client) gets what
    `bench publish-realtime` publishes, both through the sentinels."""
    import asyncio

    from benchcelery.bench.config import Settings
    from benchcelery.store.connection import make_async_client

    async def roundtrip() -> bool:
        settings = Settings.from_bench(bench.bench)
        client = make_async_client(settings)
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(settings.keys.realtime_channel)  # what the relay subscribes to
        sent = await asyncio.to_thread(
            bench.run, "--site", "site1.local", "publish-realtime", f"ha-{tag}", "--message", '{"x": 1}'
        )
        assert sent.returncode == 0, sent.stderr
        deadline, message = time.monotonic() + 5, None
        while message is None and time.monotonic() < deadline:  # the subscribe confirmation reads as None
            message = await pubsub.get_message(timeout=1)
        await pubsub.aclose()
        await client.aclose()
        return message is not None and f"ha-{tag}".encode() in message["data"]

    return asyncio.run(roundtrip())


def bench_tally_url(tally: redis.Redis) -> str:
    kw = tally.connection_pool.connection_kwargs
    return f"redis://127.0.0.1:{kw['port']}/{kw['db']}"


def _nth_done_after(tally: redis.Redis, since: float, n: int) -> float | None:
    after = sorted(t for t in (float(x) for x in tally.lrange("ha:done:at", 0, -1)) if t > since)
    return after[n - 1] if len(after) >= n else None


def test_sentinel_url_is_validated(tmp_path: Path, redis_server: RedisServer) -> None:
    b = make_bench(tmp_path / "bench", redis_server.url)
    handle = BenchHandle(b, redis_server.client(), redis_server.url)
    for url, message in [
        ("sentinel://127.0.0.1:1", "name the monitored master"),
        ("sentinel:///mymaster", "name at least one sentinel"),
        ("sentinel://u:secret@127.0.0.1:1/mymaster", "sentinel_password"),
        ("sentinel://127.0.0.1:99999/mymaster", "bad port"),
        ("sentinel://127.0.0.1:1/mymaster/x", "must end with a database number"),
        ("sentinel://bad host:1/mymaster/0", "without a valid host"),
    ]:
        edit_common_config(b.root, redis_queue=url)  # by hand: set-config would refuse it
        result = handle.run("--site", "all", "show-pending-jobs")
        assert result.returncode == 1, result
        assert message in result.stderr and "secret" not in result.stderr and "Traceback" not in result.stderr


def test_durable_enqueue_warns_when_no_replica_acknowledges(bench: BenchHandle) -> None:
    """`enqueue_wait_replicas` on a Redis without replicas: the job is queued, and a warning says it
    is on the master only; a bad value is refused before anything is written."""
    bench.set_config(enqueue_wait_replicas=1, enqueue_wait_timeout=0.2)
    keys = Keys(bench.bench.bench_id)
    result = bench.run("--site", "site1.local", "enqueue", "testapp.tasks.noop", "--queue", "short")
    assert result.returncode == 0, result.stderr
    assert (
        "Enqueue not replicated: 0 of 1 replica(s) acknowledged within 0.2 s (enqueue_wait_replicas); "
        "the job is queued on the master only" in result.stderr
    )
    import benchcelery

    benchcelery.init(site="site1.local", bench_path=str(bench.root))
    benchcelery.enqueue_many([{"method": "testapp.tasks.noop", "queue": "short"} for _ in range(3)])
    assert queued(bench, keys) == 4

    edit_common_config(bench.root, enqueue_wait_replicas="two")  # by hand: set-config would refuse it
    refused = bench.run("--site", "site1.local", "enqueue", "testapp.tasks.noop", "--queue", "short")
    assert refused.returncode in (1, 2), refused.stderr  # a bad config value is a usage error
    assert "enqueue_wait_replicas must be a whole number" in refused.stderr and "Traceback" not in refused.stderr
    assert queued(bench, keys) == 4


def queued(bench: BenchHandle, keys: Keys) -> int:
    from benchcelery.jobs.inspect import count_pending

    return sum(count_pending(bench.redis, keys, ["short"])["short"].values())


def test_frappe_sentinel_keys(tmp_path: Path, redis_server: RedisServer) -> None:
    """Frappe's redis_queue_sentinel_* keys give the same set-up as the sentinel:// URL."""
    from benchcelery.bench.config import Settings
    from benchcelery.store import sentinel

    b = make_bench(tmp_path / "bench", redis_server.url)
    b.update_config(
        {
            "redis_queue_sentinel_enabled": 1,
            "redis_queue_sentinels": ["10.0.0.1:26379", "10.0.0.2"],
            "redis_queue_master_service": "queue",
            "redis_queue_sentinel_password": "s3",
            "redis_queue_master_password": "m3",
        }
    )
    settings = Settings.from_bench(b)
    spec = sentinel.spec(settings)
    assert spec is not None and spec.nodes == (("10.0.0.1", 26379), ("10.0.0.2", 26379)) and spec.service == "queue"
    assert spec.sentinel_password == "s3" and sentinel.master_credentials(settings) == (None, "m3")
    assert sentinel.kombu_url(settings) == "sentinel://:m3@10.0.0.1:26379/0;sentinel://:m3@10.0.0.2:26379/0"
    assert "s3" not in settings.display_url and "m3" not in settings.display_url
    # redis_cache (frappe.cache()) on the same Sentinel set-up: the next database, never the queue's.
    from benchcelery.bench.config import cache_url
    from benchcelery.bench.redis_url import next_db_url, same_server

    assert next_db_url(settings.redis_url) == "sentinel://10.0.0.1:26379,10.0.0.2/queue/1"
    b.update_config({"redis_cache": None})
    cache = cache_url(Settings.from_bench(b))
    assert cache == "sentinel://10.0.0.1:26379,10.0.0.2/queue/1" and same_server(cache, settings.redis_url)
    # The bench's process files: workers and scheduler on the Sentinel set-up, no local Redis.
    handle = BenchHandle(b, redis_server.client(), redis_server.url)
    conf = handle.run("setup", "supervisor", "--dry-run")
    assert conf.returncode == 0, conf.stderr
    assert "-short-worker]" in conf.stdout and "bench schedule" in conf.stdout and "redis-queue]" not in conf.stdout


def edit_common_config(root: Path, **values: object) -> None:
    path = root / "sites" / "common_site_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **values}))


def test_enqueue_during_a_failover_waits_for_the_promoted_master(
    tmp_path: Path, cluster: Cluster, redis_server: RedisServer, tally: redis.Redis
) -> None:
    import benchcelery
    from benchcelery.errors import RedisUnavailableError
    from tests.conftest import reset_runtime

    bench = ha_bench(tmp_path / "bench", cluster, redis_server, enqueue_wait_replicas=1, enqueue_wait_timeout=1)
    start_layout(cluster, bench)
    try:
        rt = benchcelery.init(site="site1.local", bench_path=str(bench.root))
        benchcelery.enqueue("haapp.tasks.count", queue="short", n=0)
        old_master = cluster.master_port()
        cluster.kill(old_master)  # type: ignore[arg-type]
        cluster.kill(cluster.sentinel_ports[0])
        killed = time.monotonic()
        for n in range(1, 6):  # the first waits for the promotion; none raises
            benchcelery.enqueue("haapp.tasks.count", queue="short", n=n)
        waited = time.monotonic() - killed
        new_master = cluster.master_port()
        assert new_master in cluster.data_ports[1:]
        promoted = redis.Redis(port=new_master)
        queued = sum(promoted.llen(key) for key in waiting_lists(promoted, rt.keys, "short"))
        assert queued >= 5, f"{queued} of the 5 jobs enqueued during the failover are on the new master"
        print(f"\nenqueue during failover: the first call returned {waited:.1f} s after the kill")

        # No master left to promote: the wait is bounded and ends in one clear error.
        bench.set_config(enqueue_failover_wait=2)
        reset_runtime()
        benchcelery.init(site="site1.local", bench_path=str(bench.root))
        benchcelery.enqueue("haapp.tasks.count", queue="short", n=6)
        cluster.kill(new_master)  # type: ignore[arg-type]
        started = time.monotonic()
        with pytest.raises(RedisUnavailableError, match="enqueue_failover_wait"):
            benchcelery.enqueue("haapp.tasks.count", queue="short", n=7)
        assert time.monotonic() - started < 30
    finally:
        bench.stop_all()
