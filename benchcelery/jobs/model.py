"""The one description of a job, wherever it was found (just enqueued, waiting, running, failed)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

# Frappe develop writes job ids as `<site>||<id>` (with `:` of the id turned into `|`); v15 and this
# bench as `<site>::<id>`.
DEVELOP_SEP = "||"


def job_id_candidates(job_id: str, site: str | None) -> list[str]:
    """The full ids ``job_id`` may name, most likely first: ``<site>::<job_id>`` (a ``job_id`` given
    at enqueue, which may itself contain ``::``), then ``job_id`` as a full id in either form. Without
    a current ``site``, only a full id names anything."""
    found: list[str] = [f"{site}::{job_id}"] if site else []
    for sep in ("::", DEVELOP_SEP):
        head, cut, rest = job_id.partition(sep)
        if cut and head and rest and (site is None or head == site):
            found.append(f"{head}::{rest}")
            if sep == DEVELOP_SEP and "|" in rest:
                found.append(f"{head}::{rest.replace('|', ':')}")
    return list(dict.fromkeys(found))


@dataclass
class Job:
    id: str  # <site>::<id>
    site: str
    queue: str
    method: str
    state: str  # queued / started / finished / failed
    kwargs: dict[str, Any] = field(default_factory=dict)
    event: str | None = None
    timeout: int | None = None
    enqueued_at: float | None = None
    started_at: float | None = None
    position: int | None = None  # 0 = the next job a worker takes from its queue
    extra: dict[str, Any] = field(default_factory=dict)  # failure details, delivery tag, ...
    raw: bytes | None = field(default=None, repr=False)  # the waiting message, exactly as stored
    list_key: str | None = field(default=None, repr=False)

    @property
    def status(self) -> str:
        """Frappe's name for ``state``."""
        return self.state

    @property
    def short_id(self) -> str:
        """The id without its ``<site>::`` prefix (what enqueue's ``job_id`` was)."""
        return self.id.split("::", 1)[1] if "::" in self.id else self.id

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("raw")
        data.pop("list_key")
        return data
