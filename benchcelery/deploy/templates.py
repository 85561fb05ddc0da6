"""The deploy templates (``$name`` placeholders, ``string.Template``), shipped inside the package."""

from __future__ import annotations

from importlib import resources
from string import Template
from typing import Any


def read_template(name: str) -> str:
    """The text of ``deploy/<name>`` (e.g. ``supervisor/worker.conf``)."""
    root = resources.files("benchcelery").joinpath("deploy_templates")
    return root.joinpath(*name.split("/")).read_text()


def render(name: str, **values: Any) -> str:
    """Fill a template; a placeholder without a value raises KeyError (a bug, never user input)."""
    return Template(read_template(name)).substitute({k: str(v) for k, v in values.items()})
