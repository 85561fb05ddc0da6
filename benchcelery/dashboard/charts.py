"""Server-rendered SVG charts (no script, no external library: pages work offline and under the
dashboard's Content-Security-Policy, which refuses inline styles; colours are presentation
attributes and CSS classes).

Each chart scales to its container's width (``viewBox``; text is sized for a phone's width too)
and carries its figures in ``data-*`` attributes, so tests and scripts can read what it shows.
"""

from __future__ import annotations

import html
import time
from collections.abc import Sequence
from typing import Any

from markupsafe import Markup

from benchcelery.jobs.durations import BUCKETS

W, H = 480, 190
LEFT, RIGHT, TOP, BOTTOM = 48, 8, 12, 28
DONE, FAILED, P50, P95 = "#2f9e56", "#d23c3c", "#2f5fd0", "#c77800"


def seconds_text(value: float | None) -> str:
    """'-', '4ms', '1.2s', '3m', '2h'."""
    if value is None:
        return "-"
    if value < 1:
        return f"{value * 1000:.0f}ms"
    if value < 60:
        return f"{value:.1f}s" if value < 10 else f"{value:.0f}s"
    if value < 3600:
        return f"{value / 60:.0f}m"
    return f"{value / 3600:.0f}h"


def _nice(top: float) -> float:
    """A round axis maximum at or above ``top``."""
    if top <= 0:
        return 1.0
    step = 10 ** len(str(int(top))) / 10 if top >= 1 else 1.0
    for mult in (1, 2, 2.5, 5, 10):
        if step * mult >= top:
            return step * mult
    return top


def _frame(name: str, title: str, body: list[str], attrs: dict[str, Any], y_labels: list[tuple[float, str]]) -> Markup:
    plot_h = H - TOP - BOTTOM
    parts = [
        f'<svg class="chart" data-chart="{name}" viewBox="0 0 {W} {H}" role="img" '
        f'preserveAspectRatio="xMidYMid meet" xmlns="http://www.w3.org/2000/svg"'
        + "".join(f' data-{k}="{html.escape(str(v))}"' for k, v in attrs.items())
        + f"><title>{html.escape(title)}</title>"
    ]
    for frac, label in y_labels:
        y = TOP + plot_h * (1 - frac)
        parts.append(
            f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e3e6ec" stroke-width="1"/>'
        )
        parts.append(
            f'<text x="{LEFT - 4}" y="{y + 4:.1f}" text-anchor="end" font-size="15" fill="#6b7385">{label}</text>'
        )
    parts += body
    parts.append("</svg>")
    return Markup("".join(parts))


def _clock(minute: int) -> str:
    return time.strftime("%H:%M", time.localtime(minute * 60))


def _x_labels(stamps: Sequence[int], x_of: Any, every: int, fmt: Any) -> list[str]:
    out = []
    for i, stamp in enumerate(stamps):
        if i % every == 0 or i == len(stamps) - 1:
            anchor = "end" if i == len(stamps) - 1 else ("start" if i == 0 else "middle")
            out.append(
                f'<text x="{x_of(i):.1f}" y="{H - 8}" text-anchor="{anchor}" font-size="15" fill="#6b7385">'
                f"{html.escape(fmt(stamp))}</text>"
            )
    return out


def throughput(rows: Sequence[dict[str, Any]], title: str = "Jobs done / failed per minute") -> Markup:
    """Stacked bars per minute: done (green) under failed (red). ``rows``: minute, done, failed."""
    n = max(1, len(rows))
    plot_w, plot_h = W - LEFT - RIGHT, H - TOP - BOTTOM
    top = _nice(max([r["done"] + r["failed"] for r in rows] or [0]))
    slot = plot_w / n
    body = []
    for i, r in enumerate(rows):
        x = LEFT + i * slot
        done_h, failed_h = plot_h * r["done"] / top, plot_h * r["failed"] / top
        tip = f"{_clock(r['minute'])}: {r['done']} done, {r['failed']} failed"
        body.append(
            f'<g data-minute="{r["minute"]}" data-done="{r["done"]}" data-failed="{r["failed"]}"><title>{tip}</title>'
        )
        width = max(1.0, slot - 1)
        if r["done"]:
            y = TOP + plot_h - done_h
            body.append(
                f'<rect x="{x + 0.5:.1f}" y="{y:.1f}" width="{width:.1f}" height="{done_h:.1f}" fill="{DONE}"/>'
            )
        if r["failed"]:
            y = TOP + plot_h - done_h - failed_h
            body.append(
                f'<rect x="{x + 0.5:.1f}" y="{y:.1f}" width="{width:.1f}" height="{failed_h:.1f}" fill="{FAILED}"/>'
            )
        body.append("</g>")
    body += _x_labels([r["minute"] for r in rows], lambda i: LEFT + i * slot + slot / 2, 15, _clock)
    labels = [(0, "0"), (0.5, f"{top / 2:g}"), (1, f"{top:g}")]
    totals = {"done": sum(r["done"] for r in rows), "failed": sum(r["failed"] for r in rows), "minutes": len(rows)}
    return _frame("throughput", title, body, totals, labels)


def wait_lines(rows: Sequence[dict[str, Any]], title: str = "Wait time (enqueue to start), p50 and p95") -> Markup:
    """Two lines per minute, p50 (blue) and p95 (amber), over minutes that had jobs start."""
    n = max(2, len(rows))
    plot_w, plot_h = W - LEFT - RIGHT, H - TOP - BOTTOM
    top = _nice(max([r["wait_p95"] or 0 for r in rows] or [0]) or 1.0)

    def x_of(i: int) -> float:
        return LEFT + plot_w * i / (n - 1)

    body = []
    for key, colour in (("wait_p95", P95), ("wait_p50", P50)):
        points = [
            f"{x_of(i):.1f},{TOP + plot_h * (1 - (r[key] or 0) / top):.1f}"
            for i, r in enumerate(rows)
            if r[key] is not None
        ]
        if len(points) > 1:
            body.append(f'<polyline points="{" ".join(points)}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for point in points if len(points) <= 1 else []:
            x, y = point.split(",")
            body.append(f'<circle cx="{x}" cy="{y}" r="3" fill="{colour}"/>')
    body += _x_labels([r["minute"] for r in rows], x_of, 15, _clock)
    body.append(f'<text x="{W - RIGHT}" y="{TOP + 14}" text-anchor="end" font-size="15" fill="{P95}">p95</text>')
    body.append(f'<text x="{W - RIGHT - 36}" y="{TOP + 14}" text-anchor="end" font-size="15" fill="{P50}">p50</text>')
    started = [r for r in rows if r["wait_p95"] is not None]
    attrs = {"minutes": len(started), "p95": round(max([r["wait_p95"] for r in started] or [0]), 4)}
    labels = [(0, "0"), (0.5, seconds_text(top / 2)), (1, seconds_text(top))]
    return _frame("wait", title, body, attrs, labels)


def histogram(counts: Sequence[int], title: str = "Run time") -> Markup:
    """Bars per duration bucket (non-empty range only), labelled with the bucket's upper bound."""
    used = [i for i, c in enumerate(counts) if c]
    if not used:
        return _frame("histogram", title, [], {"count": 0}, [(0, "0")])
    first, last = used[0], used[-1]
    span = list(range(first, last + 1))
    plot_w, plot_h = W - LEFT - RIGHT, H - TOP - BOTTOM
    top = _nice(max(counts))
    slot = plot_w / len(span)
    body = []
    for j, i in enumerate(span):
        h = plot_h * counts[i] / top
        bound = "+Inf" if i >= len(BUCKETS) else seconds_text(BUCKETS[i])
        x, y, width = LEFT + j * slot + 1, TOP + plot_h - h, max(1.0, slot - 2)
        body.append(
            f'<rect data-le="{bound}" data-count="{counts[i]}" x="{x:.1f}" y="{y:.1f}" width="{width:.1f}" '
            f'height="{h:.1f}" fill="{P50}"><title>up to {bound}: {counts[i]}</title></rect>'
        )
    every = max(1, len(span) // 6)
    body += _x_labels(
        span,
        lambda j: LEFT + j * slot + slot / 2,
        every,
        lambda i: "≤" + ("inf" if i >= len(BUCKETS) else seconds_text(BUCKETS[i])),
    )
    labels = [(0, "0"), (0.5, f"{top / 2:g}"), (1, f"{top:g}")]
    return _frame("histogram", title, body, {"count": sum(counts)}, labels)


def hourly_bars(rows: Sequence[tuple[int, dict[str, int]]], title: str) -> Markup:
    """``throughput`` over hours (``rows``: epoch hour -> counts)."""
    minute_rows = [{"minute": h * 60, "done": c["done"], "failed": c["failed"]} for h, c in rows]
    chart = str(throughput(minute_rows, title))  # str: Markup.replace would escape its arguments
    return Markup(chart.replace('data-chart="throughput"', 'data-chart="hourly"', 1))
