"""The formatting of benchmark results: numbers as RESULTS.md shows them, median [min-max] cells,
Markdown tables, and the row filters the targets and the report's sections share."""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from typing import Any

from benchmarks.common import Summary, summary

DASH = "\u2013"  # en dash, for ranges and empty cells
TIMES = "\u00d7"


def num(x: float | None) -> str:
    if x is None:
        return DASH
    if float(x).is_integer():
        return f"{x:,.0f}"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    if abs(x) >= 1:
        return f"{x:.2f}"
    return f"{x:.3f}"


def cell(s: Summary | None) -> str:
    if s is None:
        return DASH
    if s.n == 1:
        return num(s.median)
    return f"{num(s.median)} [{num(s.low)}{DASH}{num(s.high)}]"


def ok(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if "error" not in r]


def pick(rows: list[dict[str, Any]], key: str, **match: Any) -> Summary | None:
    return summary(r.get(key) for r in rows if all(r.get(k) == v for k, v in match.items()))


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def sched_idle(rec: dict[str, Any]) -> float:
    return statistics.median(t["seconds"] for t in rec["idle"])
