"""The private names of Celery, kombu, billiard, RedBeat and redis-py that benchcelery relies on
(broker/internals.py): all present in the installed versions, and a missing one stops ``bench
worker`` and ``bench schedule`` with one line naming it and the versions installed."""

from __future__ import annotations

import re
from importlib.metadata import version
from typing import Any

import pytest
from click.testing import CliRunner

from benchcelery.broker import internals
from benchcelery.broker.internals import CLASS, ITEM, SELF, Internal
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
