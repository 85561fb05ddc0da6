"""``bench start``'s standard output: writes that never raise, and a check for a reader gone away."""

from __future__ import annotations

import os
import select
import stat
from typing import IO


class Console:
    """stdout that never raises: a closed pipe (``| head``) or a hung-up terminal marks it closed."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.closed = False

    def write(self, text: str) -> int:
        if not self.closed:
            try:
                self.stream.write(text)
            except (OSError, ValueError):
                self.closed = True
        return len(text)

    def flush(self) -> None:
        if not self.closed:
            try:
                self.stream.flush()
            except (OSError, ValueError):
                self.closed = True

    def isatty(self) -> bool:
        try:
            return self.stream.isatty()
        except (OSError, ValueError):
            return False

    def gone(self) -> bool:
        """Has the reader of stdout gone away (checked without writing)?"""
        if self.closed:
            return True
        try:
            fd = self.stream.fileno()
            mode = os.fstat(fd).st_mode
        except (OSError, ValueError, AttributeError):
            return False
        if not (stat.S_ISFIFO(mode) or stat.S_ISCHR(mode) or stat.S_ISSOCK(mode)):
            return False
        poller = select.poll()
        poller.register(fd, 0)
        if any(ev & (select.POLLERR | select.POLLHUP | select.POLLNVAL) for _, ev in poller.poll(0)):
            self.closed = True
        return self.closed
