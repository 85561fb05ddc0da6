"""Hostile input, tried as an attacker would (issue 11): each test reproduces rows of the issue's
table against a real Redis, real `bench` processes and real workers.

Rows: 1-3 method allowlist, 4-6 Redis ACL and channels, 7 secrets, 8 site scoping, 9 --kwargs
clashes, 10 Celery's built-in tasks, 11 deploy files, 12-13 configuration, 14 realtime rooms,
15 console cache, 16 echoed input.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

import benchcelery
from benchcelery.errors import ValidationError
from tests.conftest import BenchHandle

EVIL_TASKS = '''"""An app as real apps are: it imports os and subprocess."""

import os
import subprocess
from time import sleep


def hello(name: str = "world") -> str:
    return f"hello {name}"


class Report:
    @staticmethod
    def build(n: int = 1) -> int:
        return n


def _use() -> None:
    os.getcwd(), subprocess.PIPE, sleep
'''


def one_line_error(result: subprocess.CompletedProcess[str], code: int = 1) -> str:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def failed_records(bench: BenchHandle, queue: str = "default") -> dict[str, dict]:
    keys = bench.rt().keys
    return {json.loads(v)["job_id"]: json.loads(v) for v in bench.redis.hvals(keys.failed_data(queue))}


@pytest.fixture
def myapp(bench: BenchHandle) -> BenchHandle:
    result = bench.run("new-app", "myapp")
    assert result.returncode == 0, result.stderr
    (bench.root / "apps" / "myapp" / "tasks.py").write_text(EVIL_TASKS)
    return bench


# --- rows 1, 2, 16: the allowlist resolves, then checks what it found ---------------------------------
ATTRIBUTE_WALKS = [
    "myapp.tasks.os.system",
    "myapp.tasks.subprocess.run",
    "myapp.tasks.os.remove",
    "myapp.tasks.sleep",  # `from time import sleep`: lives in the app's namespace, defined elsewhere
    "jobs_demo.tasks.__loader__.get_data",
    "jobs_demo.tasks.time.sleep",
    "jobs_demo.tasks.benchcelery.enqueue",
    "jobs_demo.__builtins__.eval",
    "myapp.tasks.os",
]


def test_attribute_walks_and_dunders_are_refused_at_enqueue(myapp: BenchHandle, tmp_path: Path) -> None:
    pwned = tmp_path / "pwned.txt"
    result = myapp.run(
        "--site",
        "site1.local",
        "enqueue",
        "myapp.tasks.os.system",
        "--kwargs",
        json.dumps({"command": f"id > {pwned}"}),
    )
    assert "is refused" in one_line_error(result)
    for method in ATTRIBUTE_WALKS:
        with pytest.raises(ValidationError, match="refused"):
            myapp.enqueue(method, command="true")
    config = myapp.root / "sites" / "common_site_config.json"
    with pytest.raises(ValidationError, match="refused"):
        myapp.enqueue("jobs_demo.tasks.say", message="x", on_success="jobs_demo.tasks.__loader__.get_data")
    with pytest.raises(ValidationError, match="refused"):
        myapp.enqueue("jobs_demo.tasks.__loader__.get_data", path=str(config), on_success="jobs_demo.tasks.say")
    # What an app defines still runs: functions and Class.method of its own modules.
    assert myapp.enqueue("myapp.tasks.hello", name="x") is not None
    assert myapp.enqueue("myapp.tasks.Report.build", n=2) is not None
    # An exact allowed_methods entry is still checked the same way.
    myapp.set_config(allowed_methods=["myapp.tasks.os.system"])
    with pytest.raises(ValidationError, match="refused"):
        myapp.enqueue("myapp.tasks.os.system", command="true")
    assert not pwned.exists()


def test_forged_messages_are_refused_by_the_worker_and_recorded(myapp: BenchHandle, tmp_path: Path) -> None:
    pwned = tmp_path / "pwned.txt"
    rt = myapp.rt()
    task = rt.app.tasks["benchcelery.execute_job"]
    for i, method in enumerate(["myapp.tasks.os.system", "jobs_demo.tasks.__loader__.get_data"]):
        task.apply_async(
            kwargs={"command": f"id > {pwned}"} if i == 0 else {"path": str(pwned)},
            queue="default",
            task_id=f"site1.local::forged{i}",
            headers={"site": "site1.local", "method": method},
        )
    # Row 10: Celery's built-in tasks are not ours to run.
    rt.app.send_task("celery.accumulate", args=[1], queue="default", task_id="site1.local::accumulate")
    rt.app.send_task("celery.chord_unlock", args=["x", {}], queue="default", task_id="site1.local::unlock")
    myapp.enqueue("testapp.tasks.record", key="alive", value="yes")
    result = myapp.run("worker", "--burst", timeout=90)
    assert result.returncode == 0, result.stderr
    assert myapp.results("alive") == ["yes"]
    assert not pwned.exists()
    records = failed_records(myapp)
    assert "refused" in records["site1.local::forged0"]["exception"]
    assert "refused" in records["site1.local::forged1"]["exception"]
    for job_id in ("site1.local::accumulate", "site1.local::unlock"):
        assert "Unknown task" in records[job_id]["exception"], records.get(job_id)


def test_app_names_shadowing_importable_modules_are_refused(bench: BenchHandle) -> None:
    for name in ("os", "json", "subprocess", "celery", "redis", "benchcelery"):
        assert "shadows" in one_line_error(bench.run("new-app", name))
    assert bench.bench.apps() == ["jobs_demo", "testapp"]
    assert not (bench.root / "apps" / "os").exists()


def test_error_messages_cap_what_they_echo(bench: BenchHandle) -> None:
    huge = "a." + "b" * 100_000
    line = one_line_error(bench.run("--site", "site1.local", "enqueue", huge))
    assert len(line) < 400
    with pytest.raises(ValidationError) as info:
        bench.enqueue("x" * 50_000)
    assert len(str(info.value)) < 400


# --- row 9: --kwargs are only the job's arguments ----------------------------------------------------
@pytest.mark.parametrize("key", ["now", "queue", "timeout", "task", "self", "job_id", "on_success", "is_async"])
def test_kwargs_clashing_with_enqueue_parameters_are_refused(bench: BenchHandle, key: str) -> None:
    kwargs = json.dumps({"message": "x", key: True})
    line = one_line_error(bench.run("--site", "site1.local", "enqueue", "jobs_demo.tasks.say", "--kwargs", kwargs))
    assert key in line and "--kwargs" in line
    assert not bench.redis.keys(f"{bench.prefix}*")
    assert not (bench.root / "logs" / "jobs_demo.log").exists()  # `now` did not run it in the CLI


def test_kwargs_named_like_enqueue_parameters_are_refused_in_python(bench: BenchHandle) -> None:
    from benchcelery.jobs.enqueue import enqueue_many

    benchcelery.init(site="site1.local", bench_path=str(bench.root))
    with pytest.raises(ValidationError, match="task"):
        enqueue_many([{"method": "jobs_demo.tasks.say", "kwargs": {"message": "x", "task": 1}}])
    with pytest.raises(ValidationError, match="self"):
        benchcelery.enqueue("jobs_demo.tasks.say", message="x", self=1)
    assert not bench.redis.keys(f"{bench.prefix}*")


def _unused() -> None:
    os.getcwd()
