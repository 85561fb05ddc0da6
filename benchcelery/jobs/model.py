"""The one description of a job, wherever it was found (just enqueued, waiting, running, failed)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


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
