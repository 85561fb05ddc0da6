"""``bench jobs top``: a live terminal view of the bench's jobs (rich), refreshed every second.

Sites x queues (waiting, running, failed, oldest waiting job), live workers with their current
job and how long it has run, and jobs done / failed per minute. ``q`` quits (the terminal is put
in cbreak mode meanwhile); ``--once`` prints one frame and exits, for scripts. Fits 80 columns.
"""

from __future__ import annotations

import contextlib
import os
import select
import sys
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import click

from benchcelery.cli.base import CliContext, pass_ctx
from benchcelery.util.text import age

if TYPE_CHECKING:  # the view's data is read only when the command runs (bench --help lists it)
    from benchcelery.diagnostics.top import TopFrame

SPARK = "·▁▂▃▄▅▆▇█"
MAX_ROWS = 12  # (site, queue) rows shown; the rest are summed in one line
MAX_WORKERS = 8
JOB_WIDTH = 30


def tail(text: str, width: int) -> str:
    """``text`` cut from the left (a method's own name is at its end)."""
    return text if len(text) <= width else "…" + text[-(width - 1) :]


def spark(values: list[int]) -> str:
    top = max(values or [0])
    if not top:
        return SPARK[0] * len(values)
    return "".join(SPARK[min(8, -(-v * 8 // top))] for v in values)


def render(frame: TopFrame) -> Any:
    """The frame as a rich renderable."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    done = [m["done"] for m in frame.minutes]
    failed = [m["failed"] for m in frame.minutes]
    last = frame.minutes[-2] if len(frame.minutes) > 1 else {"done": 0, "failed": 0}
    clock = time.strftime("%H:%M:%S", time.localtime(frame.taken_at))
    head = Text.assemble(
        (f"bench {frame.bench_id}", "bold"),
        f"  {clock}   last minute: ",
        (f"{last['done']} done", "green"),
        ", ",
        (f"{last['failed']} failed", "red" if last["failed"] else ""),
        "   q quits",
    )
    rate = Text.assemble(
        f"done/min   {spark(done)}  ({sum(done)} in {len(done)} min)\n",
        (f"failed/min {spark(failed)}  ({sum(failed)})", "red" if sum(failed) else ""),
    )
    queues = Table(expand=False, box=None, pad_edge=False, header_style="bold")
    queues.add_column("SITE", no_wrap=True, max_width=30, overflow="ellipsis")
    queues.add_column("QUEUE", no_wrap=True, max_width=12, overflow="ellipsis")
    for name in ("WAITING", "RUNNING", "FAILED", "OLDEST"):
        queues.add_column(name, justify="right", no_wrap=True)
    for row in frame.rows[:MAX_ROWS]:
        queues.add_row(
            row.site,
            row.queue,
            str(row.waiting),
            str(row.running),
            Text(str(row.failed), "red" if row.failed else ""),
            age(row.oldest, minute_seconds=True),
        )
    if len(frame.rows) > MAX_ROWS:
        queues.add_row(f"... {len(frame.rows) - MAX_ROWS} more", "", "", "", "", "")
    t = frame.totals
    queues.add_row(
        Text("all", "bold"), "", str(t.waiting), str(t.running), str(t.failed), age(t.oldest, minute_seconds=True)
    )
    workers = Table(expand=False, box=None, pad_edge=False, header_style="bold")
    workers.add_column("WORKER", no_wrap=True, max_width=24, overflow="ellipsis")
    workers.add_column("QUEUES", no_wrap=True, max_width=14, overflow="ellipsis")
    workers.add_column("CURRENT JOB", no_wrap=True, max_width=JOB_WIDTH, overflow="ellipsis")
    workers.add_column("AGE", justify="right", no_wrap=True)
    for w in frame.workers[:MAX_WORKERS]:
        job, running = w.jobs[0] if w.jobs else ("idle", None)
        more = f" +{len(w.jobs) - 1}" if len(w.jobs) > 1 else ""
        workers.add_row(
            w.name, ",".join(w.queues), tail(job, JOB_WIDTH - len(more)) + more, age(running, minute_seconds=True)
        )
    if not frame.workers:
        workers.add_row(Text("no live worker", "red"), "", "", "")
    return Group(head, Text(""), queues, Text(""), workers, Text(""), rate)


@contextlib.contextmanager
def _keys() -> Iterator[Any]:
    """stdin in cbreak mode (keys arrive one by one, unechoed); restored on the way out."""
    if not sys.stdin.isatty():
        yield None
        return
    import termios
    import tty

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)
    try:
        yield fd
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _quit_pressed(fd: int | None, timeout: float) -> bool:
    """Wait up to ``timeout`` s for a key; True when it was q (or Q)."""
    if fd is None:
        time.sleep(timeout)
        return False
    ready, _, _ = select.select([fd], [], [], timeout)
    return bool(ready) and os.read(fd, 32).lower().startswith(b"q")


def run(rt: Any, once: bool, interval: float = 1.0) -> None:
    """Print one frame (``once``), or refresh until q is pressed (or Ctrl-C)."""
    from rich.console import Console
    from rich.live import Live

    from benchcelery.diagnostics.top import snapshot

    console = Console(file=sys.stdout, width=None if sys.stdout.isatty() else 80)
    if once:
        console.print(render(snapshot(rt)))
        return
    with _keys() as fd, Live(render(snapshot(rt)), console=console, auto_refresh=False, screen=True) as live:
        try:
            while not _quit_pressed(fd, interval):
                live.update(render(snapshot(rt)), refresh=True)
        except KeyboardInterrupt:
            pass


@click.command("top")
@click.option("--once", is_flag=True, help="Print one frame and exit (for scripts).")
@click.option(
    "--interval", type=click.FloatRange(min=0.2), default=1.0, show_default=True, help="Seconds between frames."
)
@pass_ctx
def top_cmd(obj: CliContext, once: bool, interval: float) -> None:
    """A live view of every site's queues, the workers and their jobs, and the throughput; q quits."""
    run(obj.runtime(), once, interval)
