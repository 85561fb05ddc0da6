"""``bench setup logrotate``: a logrotate config for the bench's logs.

Every writer keeps its log file open (supervisor with ``*_logfile_maxbytes=0``, systemd's
``append:``, ``bench start``), so rotation copies and truncates (``copytruncate``) rather than
moving the file away under them.
"""

from __future__ import annotations

import grp
import pwd
from pathlib import Path

from benchcelery.bench.layout import Bench

CONF_NAME = "logrotate.conf"


def _owner(path: Path) -> tuple[str, str]:
    """User and group that own ``path`` (logrotate's ``su``: it refuses a directory writable by a
    non-root user without one)."""
    st = path.stat()
    try:
        user = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        user = str(st.st_uid)
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    return user, group


def render_logrotate(bench: Bench, keep: int = 14) -> dict[Path, str]:
    """config/logrotate.conf: the bench's ``logs/*.log`` and the sites' ``sites/*/logs/*.log``,
    daily (or past 100 MB), ``keep`` compressed generations, copied then truncated."""
    logs = bench.logs_path
    logs.mkdir(parents=True, exist_ok=True)
    user, group = _owner(logs)
    conf = bench.config_path / CONF_NAME
    text = f"""# logrotate config for the bench at {bench.root}: written by `bench setup logrotate`.
# Install it: sudo ln -sf "{conf}" /etc/logrotate.d/bench-{bench.name}
# Try it:     sudo logrotate --debug "{conf}"
# copytruncate: supervisor, systemd and `bench start` keep the files open, so they are copied and
# truncated in place, never moved away under their writers.
"{logs}/*.log" "{bench.sites_path}/*/logs/*.log" {{
    su {user} {group}
    daily
    maxsize 100M
    rotate {keep}
    missingok
    notifempty
    compress
    delaycompress
    copytruncate
}}
"""
    return {conf: text}
