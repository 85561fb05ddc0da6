"""The private names of Celery, kombu, billiard, RedBeat and redis-py that benchcelery relies on
(broker/internals.py): all present in the installed versions, and a missing one stops ``bench
worker`` and ``bench schedule`` with one line naming it and the versions installed."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib.metadata import version
from typing import Any

import pytest
from click.testing import CliRunner

from benchcelery.broker import internals
from benchcelery.broker.internals import CLASS, ITEM, SCHEDULER, SELF, WORKER, Internal
from tests.conftest import BenchHandle

MISSING = Internal("kombu.transport.redis:Channel", "_no_such_attribute", "tests", SELF)
LINE = re.compile(
    r"^benchcelery needs kombu\.transport\.redis\.Channel\._no_such_attribute, missing in kombu (\S+) "
    r"\(celery (\S+), billiard (\S+), redis-py (\S+), celery-redbeat (\S+)\)$"
)


def test_every_private_name_we_rely_on_is_there() -> None:
    assert internals.check() == []


def test_the_list_has_no_duplicates() -> None:
    assert len(set(internals.INTERNALS)) == len(internals.INTERNALS)


@pytest.mark.parametrize(
    ("internal", "named"),
    [
        (Internal("celery.concurrency.asynpool:AsynPool", "_no_such", "tests", CLASS), "asynpool.AsynPool._no_such"),
        (Internal("redis.client:Pipeline", "no_such_stack", "tests", SELF), "redis.client.Pipeline.no_such_stack"),
        (
            Internal("celery.worker.consumer:Consumer.Blueprint", "default_steps", "tests", ITEM, "x.y:NoSuchStep"),
            "'x.y:NoSuchStep' in celery.worker.consumer.Consumer.Blueprint.default_steps",
        ),
        (Internal("redbeat.schedulers:NoSuchClass", "lock", "tests"), "redbeat.schedulers.NoSuchClass.lock"),
    ],
)
def test_each_kind_of_check_notices_a_missing_name(internal: Internal, named: str) -> None:
    [problem] = internals.check([internal])
    assert problem.startswith("benchcelery needs ") and named in problem
    assert "missing in " in problem and "\n" not in problem


class _Assigning:
    """Every way a function can set an instance attribute, and two that do not set one on self."""

    def __init__(self, other: Any) -> None:
        self.plain = 1
        self.first, self.in_tuple = 1, 2
        value = self.chained = 3
        self.annotated: int = value
        self.__mangled = 5
        other.not_on_self = 6
        self.from_another = self.plain

    def later(self) -> None:
        def nested() -> None:
            self.in_closure = 7

        nested()
        print(self.only_read)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("name", "assigned"),
    [
        ("plain", True),
        ("in_tuple", True),
        ("chained", True),
        ("annotated", True),
        ("__mangled", True),
        ("in_closure", True),
        ("from_another", True),
        ("not_on_self", False),
        ("only_read", False),
    ],
)
def test_an_instance_attribute_counts_only_where_self_is_assigned_it(name: str, assigned: bool) -> None:
    internal = Internal("tests.test_internals:_Assigning", name, "tests", SELF)
    assert (internals.check([internal]) == []) is assigned


def test_the_worker_checks_every_name_but_the_schedulers_own() -> None:
    worker_side = Internal("kombu.transport.redis:Channel", "_no_such", "broker/transport.py", CLASS)
    scheduler_side = Internal("redbeat.schedulers:RedBeatScheduler", "_no_such", "scheduler/beat.py", CLASS)
    [problem] = internals.check([worker_side, scheduler_side], WORKER)
    assert "kombu.transport.redis.Channel._no_such" in problem
    assert len(internals.check([worker_side, scheduler_side], SCHEDULER)) == 2
    assert {i.module for i in internals.INTERNALS if i.scheduler_only} == {
        "celery.apps.beat",
        "celery.schedules",
        "redbeat.decoder",
        "redbeat.schedulers",
    }


def test_the_workers_check_imports_nothing_a_worker_does_not() -> None:
    """The scheduler's libraries (celery beat, RedBeat and what they import) stay out of a worker."""
    code = (
        "import sys; from benchcelery.broker import internals as i; "
        "assert i.check(process=i.WORKER) == []; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('redbeat', 'tenacity', 'tornado') "
        "or m in ('celery.beat', 'celery.apps.beat', 'celery.schedules')))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def _missing_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(internals, "INTERNALS", [*internals.INTERNALS, MISSING])


def _assert_the_line(output: str) -> None:
    lines = output.strip().splitlines()
    assert len(lines) == 1, output
    match = LINE.match(lines[0])
    assert match, lines[0]
    names = ("kombu", "celery", "billiard", "redis", "celery-redbeat")
    assert list(match.groups()) == [version(name) for name in names]


def _not_reached(*_: Any, **__: Any) -> None:
    raise AssertionError("started past the check")


def test_worker_stops_at_start_naming_the_missing_name(bench: BenchHandle, monkeypatch: pytest.MonkeyPatch) -> None:
    import benchcelery.worker
    from benchcelery.cli import cli

    _missing_one(monkeypatch)
    monkeypatch.setattr(benchcelery.worker, "run_worker", _not_reached)
    result = CliRunner().invoke(cli, ["--bench", str(bench.root), "worker", "--burst"])
    assert result.exit_code == 1, (result.output, result.exception)
    _assert_the_line(result.output)


def test_schedule_stops_at_start_naming_the_missing_name(bench: BenchHandle, monkeypatch: pytest.MonkeyPatch) -> None:
    import benchcelery.scheduler.beat
    from benchcelery.cli import cli

    _missing_one(monkeypatch)
    monkeypatch.setattr(benchcelery.scheduler.beat, "run_beat", _not_reached)
    result = CliRunner().invoke(cli, ["--bench", str(bench.root), "schedule"])
    assert result.exit_code == 1, (result.output, result.exception)
    _assert_the_line(result.output)
