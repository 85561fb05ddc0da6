"""Process titles that say what a process serves, so `ps aux | grep "bench worker"` finds it."""

from __future__ import annotations


def set_title(title: str) -> None:
    try:
        import setproctitle
    except ImportError:
        return
    setproctitle.setproctitle(title)
