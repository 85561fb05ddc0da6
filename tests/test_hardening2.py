"""Issue 22, rows 9, 10, 12 and 13: passwords in URL queries, terminal escapes in job data, deploy
files at hostile paths, and sites that are not directories of the bench. Real Redis, real `bench`
processes and real workers, as in tests/test_security.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from benchcelery.store.server import free_port, start_server, stop_server
from tests.conftest import BenchHandle, burst, make_bench, reset_runtime

QUERY_PW = "QueryPW77"


# --- row 9: a password given as ?password= is masked, and a worker starts with it ---------------------
@pytest.fixture
def password_bench(tmp_path: Path) -> Iterator[BenchHandle]:
    """A bench whose Redis needs a password, given as ``redis_queue: redis://…/6?password=…``."""
    import redis

    port = free_port()
    server = start_server(port, tmp_path / "redis", args=["--requirepass", QUERY_PW])
    url = f"redis://127.0.0.1:{port}/6?password={QUERY_PW}"
    handle = BenchHandle(make_bench(tmp_path / "bench", url), redis.Redis(port=port, db=6, password=QUERY_PW), url)
    try:
        yield handle
    finally:
        handle.stop_all()
        reset_runtime()
        stop_server(server)


def test_query_password_is_masked_and_a_worker_starts_with_it(password_bench: BenchHandle) -> None:
    bench = password_bench
    for args in (("show-config",), ("show-config", "-f", "json"), ("doctor", "--no-db"), ("doctor", "-f", "json")):
        result = bench.run("--site", "site1.local", *args)
        assert "Traceback" not in result.stderr, result.stderr
        assert QUERY_PW not in result.stdout + result.stderr, (args, result.stdout)
    shown = bench.run("--site", "site1.local", "show-config").stdout
    assert "password=***" in shown, shown
    job = bench.enqueue("testapp.tasks.record", key="qpw", value=1)
    result = burst(bench, "--queue", "default")
    assert QUERY_PW not in result.stdout + result.stderr
    assert bench.results("qpw") == [1], job.id


def test_mask_url_masks_every_password_spelling() -> None:
    from benchcelery.bench.redis_url import mask_url

    assert mask_url("redis://h:1/6?password=pw") == "redis://h:1/6?password=***"
    assert mask_url("redis://u:pw@h:1/0?a=1&Password=pw&sentinel_password=pw") == (
        "redis://u:***@h:1/0?a=1&Password=***&sentinel_password=***"
    )
    assert mask_url("unix:///tmp/r.sock?db=1&password=pw") == "unix:///tmp/r.sock?db=1&password=***"
    assert mask_url("redis://h:1/0?db=2") == "redis://h:1/0?db=2"


def test_broker_url_moves_query_credentials_into_the_userinfo(tmp_path: Path) -> None:
    from kombu import Connection

    from benchcelery.bench.config import Settings
    from benchcelery.bench.layout import Bench
    from benchcelery.store.connection import broker_url

    bench = Bench(tmp_path)
    plain = Settings(bench=bench, redis_url="redis://h:1/6?password=p%26w&x=1", bench_id="b", queues={}, conf={})
    url = broker_url(plain)
    assert url == "redis://:p%26w@h:1/6?x=1", url
    assert Connection(url.replace("?x=1", "")).password == "p&w"
    named = Settings(bench=bench, redis_url="redis://h:1/6?username=u&password=pw", bench_id="b", queues={}, conf={})
    assert broker_url(named) == "redis://u:pw@h:1/6"
