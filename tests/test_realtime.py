"""Realtime events through real parts: `bench publish-realtime`, jobs run by a real burst worker, a
real `bench realtime` process, and a real python-socketio client connecting to it."""

from __future__ import annotations

import json
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import socketio

from benchcelery.errors import BenchError
from benchcelery.realtime import build_event, publish_realtime, room_for
from benchcelery.realtime.tokens import SECRET_KEY, InvalidToken, make_token, verify_token
from benchcelery.store.server import free_port, start_server, stop_server
from tests.conftest import BenchHandle, burst, wait_until

SITE1, SITE2 = "site1.local", "site2.local"


# --- helpers ---


class Relay:
    """A `bench realtime` process on a free port."""

    def __init__(self, bench: BenchHandle) -> None:
        self.bench = bench
        self.port = free_port()
        self.proc = bench.start("realtime", "--port", str(self.port))
        self.url = f"http://127.0.0.1:{self.port}"
        self.wait_healthy()

    def health(self) -> tuple[int, dict[str, Any]]:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=2) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")
        except OSError:
            return 0, {}

    def wait_healthy(self, timeout: float = 30) -> None:
        """Until it listens and is subscribed to Redis (so a PUBLISH from now on reaches it)."""

        def ready() -> bool:
            assert self.proc.poll() is None, self.log()
            return self.health()[0] == 200

        wait_until(ready, timeout, interval=0.1, what=f"bench realtime to be ready\n{self.log()}")

    def log(self) -> str:
        return self.bench.output(self.proc)


class Client:
    """A python-socketio client connected to /<site>, recording every event it receives."""

    def __init__(self, relay: Relay, site: str, token: str | None, connect: bool = True) -> None:
        self.namespace = f"/{site}"
        self.events: list[tuple[str, Any]] = []
        self._lock = threading.Lock()
        self.sio = socketio.Client(reconnection=False)
        self.sio.on("*", self._record, namespace=self.namespace)
        self.relay = relay
        self.token = token
        if connect:
            self.connect()

    def connect(self) -> None:
        auth = {"token": self.token} if self.token is not None else None
        self.sio.connect(
            self.relay.url, namespaces=[self.namespace], auth=auth, transports=["websocket"], wait_timeout=15
        )

    def _record(self, event: str, *args: Any) -> None:
        with self._lock:
            self.events.append((event, args[0] if args else None))

    def call(self, event: str, *args: Any) -> Any:
        return self.sio.call(event, args if len(args) != 1 else args[0], namespace=self.namespace, timeout=10)

    def names(self) -> list[str]:
        with self._lock:
            return [e for e, _ in self.events]

    def wait_for(self, event: str, timeout: float = 30) -> Any:
        def found() -> Any:
            with self._lock:
                return next(((e, m) for e, m in self.events if e == event), None)

        return wait_until(found, timeout, interval=0.05, what=f"event {event} in {self.namespace}")[1]

    def close(self) -> None:
        self.sio.disconnect()


@pytest.fixture
def relay(bench: BenchHandle) -> Relay:
    return Relay(bench)


@pytest.fixture
def clients() -> Iterator[list[Client]]:
    made: list[Client] = []
    yield made
    for client in made:
        client.close()


def token(bench: BenchHandle, site: str, user: str) -> str:
    return make_token(bench.bench, site, user).token


def connect(clients: list[Client], relay: Relay, site: str, user: str) -> Client:
    client = Client(relay, site, token(relay.bench, site, user))
    clients.append(client)
    return client


def publish(bench: BenchHandle, site: str, *args: str) -> subprocess.CompletedProcess[str]:
    result = bench.run("--site", site, "publish-realtime", *args)
    assert result.returncode == 0, result.stderr
    return result


# --- publishing without a relay: room rules, wire format, message parsing ---


@pytest.mark.parametrize(
    ("kwargs", "room"),
    [
        ({"room": "custom", "user": "u"}, "custom"),
        ({"user": "a@x.com", "doctype": "ToDo", "docname": "1"}, "user:a@x.com"),
        ({"doctype": "Sales Order", "docname": "SO-1"}, "doc:Sales Order/SO-1"),
        ({"doctype": "Sales Order"}, "doctype:Sales Order"),
        ({}, "all"),
    ],
)
def test_room_rules(kwargs: dict[str, str], room: str) -> None:
    assert room_for("ev", **kwargs) == room


def test_frappe_special_events_pick_their_rooms() -> None:
    assert room_for("list_update", user="u", doctype="ToDo") == "doctype:ToDo"
    assert room_for("docinfo_update", user="u", doctype="ToDo", docname="1") == "doc:ToDo/1"
    ev = build_event("x", site=SITE1, bench_id="b1")
    assert (ev.message, ev.room, ev.namespace) == ({}, "all", SITE1)


def test_wire_format_and_message_parsing(bench: BenchHandle) -> None:
    pubsub = bench.redis.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(bench.rt().keys.realtime_channel)
    try:
        result = publish(bench, SITE1, "ev1", "--message", '{"a": [1, 2]}', "--user", "u@x.com")
        assert "Published ev1 to room user:u@x.com of site1.local: received by 1 subscriber" in result.stdout
        publish(bench, SITE1, "ev2", "--message", "not json {")
        publish(bench, SITE1, "ev3", "--doctype", "ToDo", "--after-commit", "yes")
        got = []
        while len(got) < 3:
            msg = wait_until(lambda: pubsub.get_message(timeout=0.5), 20, what="a published event")
            got.append(json.loads(msg["data"]))
    finally:
        pubsub.close()
    base = {"namespace": SITE1, "bench": bench.bench.bench_id}
    assert got == [
        {**base, "event": "ev1", "message": {"a": [1, 2]}, "room": "user:u@x.com"},
        {**base, "event": "ev2", "message": "not json {", "room": "all"},
        {**base, "event": "ev3", "message": {}, "room": "doctype:ToDo"},
    ]


def test_publish_json_output_and_errors(bench: BenchHandle) -> None:
    result = bench.run("--site", SITE2, "publish-realtime", "ev", "--message", "7", "--format", "json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [{"site": SITE2, "event": "ev", "room": "all", "message": 7, "receivers": 0}]

    missing = bench.run("--site", "nope.local", "publish-realtime", "ev")
    assert missing.returncode == 1
    assert missing.stderr.strip() == "Site nope.local does not exist!"

    bench.set_config(redis_queue=f"redis://127.0.0.1:{free_port()}")
    down = bench.run("--site", SITE1, "publish-realtime", "ev")
    assert down.returncode == 69
    assert len(down.stderr.strip().splitlines()) == 1 and "unreachable" in down.stderr


def test_library_needs_a_site(bench: BenchHandle) -> None:
    from benchcelery.context import local

    bench.rt()
    local.site = None
    with pytest.raises(BenchError, match="needs a site"):
        publish_realtime("ev")


# --- tokens ---


def test_tokens_are_signed_per_site(bench: BenchHandle) -> None:
    assert SECRET_KEY not in bench.bench.site_config(SITE1)
    result = bench.run("--site", SITE1, "realtime", "token", "--user", "a@x.com")
    assert result.returncode == 0, result.stderr
    tok = result.stdout.strip()
    secret = bench.bench.site_config(SITE1)[SECRET_KEY]  # generated on first use, then kept
    assert verify_token(bench.bench, SITE1, tok) == "a@x.com"
    assert token(bench, SITE1, "b@x.com") and bench.bench.site_config(SITE1)[SECRET_KEY] == secret

    token(bench, SITE2, "a@x.com")
    for bad_site, bad in [(SITE2, tok), (SITE1, tok[:-2] + "xx"), (SITE1, ""), (SITE1, None)]:
        with pytest.raises(InvalidToken):
            verify_token(bench.bench, bad_site, bad)
    bench.set_config(SITE1, realtime_token_max_age=1)  # the smallest age config accepts

    def expired() -> bool:
        try:
            verify_token(bench.bench, SITE1, tok)
        except InvalidToken as exc:
            assert "SignatureExpired" in str(exc)
            return True
        return False

    wait_until(expired, 10, interval=0.2, what="the token to expire")

    need_one = bench.run("--site", "all", "realtime", "token", "--user", "a@x.com")
    assert need_one.returncode == 2 and "one site" in need_one.stderr


# --- through a running relay ---


def test_cli_event_reaches_client(bench: BenchHandle, relay: Relay, clients: list[Client]) -> None:
    client = connect(clients, relay, SITE1, "a@x.com")
    result = publish(bench, SITE1, "hello", "--message", '{"n": 1}')
    assert "received by 1 subscriber" in result.stdout
    assert client.wait_for("hello") == {"n": 1}


def test_guide_examples(bench: BenchHandle, relay: Relay, clients: list[Client]) -> None:
    site = "development.localhost"
    bench.bench.new_site(site)
    admin = connect(clients, relay, site, "admin@example.com")
    assert admin.call("doc_subscribe", "Sales Order", "SO-2024-00001") == "doc:Sales Order/SO-2024-00001"

    # The guide's three examples, verbatim.
    for args in (
        ["my_event", "--message", "Test message", "--room", "user:admin@example.com"],
        ["notification", "--message", "New order", "--user", "admin@example.com"],
        ["doc_update", "--doctype", "Sales Order", "--docname", "SO-2024-00001"],
    ):
        result = bench.run("--site", site, "publish-realtime", *args)
        assert result.returncode == 0, result.stderr
        assert "received by 1 subscriber" in result.stdout
    assert admin.wait_for("my_event") == "Test message"
    assert admin.wait_for("notification") == "New order"
    assert admin.wait_for("doc_update") == {}


def test_user_and_site_isolation(bench: BenchHandle, relay: Relay, clients: list[Client]) -> None:
    alice = connect(clients, relay, SITE1, "alice@x.com")
    bob = connect(clients, relay, SITE1, "bob@x.com")
    other_site = connect(clients, relay, SITE2, "alice@x.com")  # same user name, another site

    publish(bench, SITE1, "for_alice", "--user", "alice@x.com", "--message", "secret")
    publish(bench, SITE1, "for_site1", "--message", "everyone on site1")
    publish(bench, SITE1, "doc_event", "--doctype", "ToDo", "--docname", "T1")
    # Events are relayed in order: once the last one arrived, earlier ones would have too.
    publish(bench, SITE2, "sentinel")
    publish(bench, SITE1, "sentinel")
    for client in (alice, bob, other_site):
        client.wait_for("sentinel")

    assert alice.wait_for("for_alice") == "secret"
    assert alice.names() == ["for_alice", "for_site1", "sentinel"]
    assert bob.names() == ["for_site1", "sentinel"]
    assert other_site.names() == ["sentinel"]


def test_room_subscriptions(bench: BenchHandle, relay: Relay, clients: list[Client]) -> None:
    client = connect(clients, relay, SITE1, "a@x.com")
    assert client.call("doctype_subscribe", "ToDo") == "doctype:ToDo"
    assert client.call("doc_subscribe", "ToDo", "T1") == "doc:ToDo/T1"
    assert client.call("doc_subscribe", "ToDo") is None  # refused: no name
    publish(bench, SITE1, "list_changed", "--doctype", "ToDo")
    publish(bench, SITE1, "doc_changed", "--doctype", "ToDo", "--docname", "T1")
    publish(bench, SITE1, "not_mine", "--doctype", "ToDo", "--docname", "T2")
    publish(bench, SITE1, "other_room", "--room", "user:b@x.com")
    assert client.call("doc_unsubscribe", "ToDo", "T1") == "doc:ToDo/T1"
    publish(bench, SITE1, "doc_changed_again", "--doctype", "ToDo", "--docname", "T1")
    publish(bench, SITE1, "sentinel")
    client.wait_for("sentinel")
    assert client.names() == ["list_changed", "doc_changed", "sentinel"]


def test_only_this_benchs_events_are_relayed(bench: BenchHandle, relay: Relay, clients: list[Client]) -> None:
    client = connect(clients, relay, SITE1, "a@x.com")
    channel = bench.rt().keys.realtime_channel
    mine = bench.bench.bench_id
    wire = {"event": "x", "message": 1, "room": "all", "namespace": SITE1}
    bench.redis.publish(channel, json.dumps({**wire, "event": "other_bench", "bench": "another-bench"}))
    bench.redis.publish(channel, json.dumps({**wire, "event": "connect", "bench": mine}))  # reserved name
    bench.redis.publish(channel, b"\xff not json")
    bench.redis.publish(channel, json.dumps({**wire, "event": "no_bench_field"}))  # refused: names no bench
    bench.redis.publish("events", json.dumps({**wire, "event": "frappe_channel", "bench": mine}))  # not ours
    bench.redis.publish(channel, json.dumps({**wire, "event": "ours", "bench": mine}))
    client.wait_for("ours")
    assert client.names() == ["ours"]


def test_invalid_token_is_refused(bench: BenchHandle, relay: Relay, clients: list[Client]) -> None:
    good_for_site2 = token(bench, SITE2, "a@x.com")
    token(bench, SITE1, "a@x.com")  # the site has a secret, so only the token is wrong
    bad = [(SITE1, "forged"), (SITE1, None), (SITE1, good_for_site2), ("nope.local", good_for_site2)]
    for site, tok in bad:
        client = Client(relay, site, tok, connect=False)
        with pytest.raises(socketio.exceptions.ConnectionError):
            client.connect()
    assert "Refused" in relay.log()
    connect(clients, relay, SITE2, "a@x.com")  # the same server still accepts a good one


def test_events_from_jobs(bench: BenchHandle, relay: Relay, clients: list[Client]) -> None:
    client = connect(clients, relay, SITE1, "a@x.com")
    bench.enqueue("testapp.tasks.publish_event", site=SITE1, name="from_job", message={"k": "v"}, user="a@x.com")
    bench.enqueue("testapp.tasks.publish_event", site=SITE1, name="after_commit_ok", after_commit=True)
    burst(bench, "--quiet", timeout=120)
    assert client.wait_for("from_job") == {"k": "v"}
    assert client.wait_for("after_commit_ok") == {}


def test_after_commit_of_a_failing_job_never_arrives(bench: BenchHandle, relay: Relay, clients: list[Client]) -> None:
    client = connect(clients, relay, SITE1, "a@x.com")
    bench.enqueue(
        "testapp.tasks.publish_then_fail", site=SITE1, now_event="sent_now", held_event="held", user="a@x.com"
    )
    burst(bench, "--quiet", timeout=120)  # the job has failed once this returns
    publish(bench, SITE1, "sentinel")
    client.wait_for("sentinel")
    assert client.wait_for("sent_now") == {"sent": "now"}
    assert client.names() == ["sent_now", "sentinel"]


def test_relay_survives_a_redis_restart(bench: BenchHandle, tmp_path: Path, clients: list[Client]) -> None:
    port = free_port()
    workdir = tmp_path / "redis-restart"
    server = start_server(port, workdir)
    try:
        bench.set_config(redis_queue=f"redis://127.0.0.1:{port}")
        relay = Relay(bench)
        client = connect(clients, relay, SITE1, "a@x.com")
        publish(bench, SITE1, "before")
        client.wait_for("before")

        stop_server(server)
        wait_until(lambda: relay.health()[0] == 503, 30, what="the relay to notice Redis is gone")
        server = start_server(port, workdir)
        relay.wait_healthy()
        result = publish(bench, SITE1, "after", "--message", "back")
        assert "received by 1 subscriber" in result.stdout
        assert client.wait_for("after") == "back"
        assert client.sio.connected  # browsers stayed connected through the outage
        log = relay.log()
        assert "Lost Redis connection" in log and "Reconnected to Redis" in log
    finally:
        stop_server(server)


def test_port_in_use_is_one_line(bench: BenchHandle, relay: Relay) -> None:
    result = bench.run("realtime", "--port", str(relay.port), timeout=30)
    assert result.returncode == 1
    assert result.stderr.strip().startswith(f"Cannot listen on 127.0.0.1:{relay.port}")
