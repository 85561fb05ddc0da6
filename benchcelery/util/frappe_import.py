"""Makes ``import frappe`` find benchcelery's stand-in (``benchcelery/compat/frappe``) when the real
Frappe is not installed, so app code written for Frappe imports unchanged in workers, the scheduler,
the bench commands and the app's own scripts (after ``benchcelery.init`` or
``import benchcelery.compat.install``).

The finder sits at the *end* of ``sys.meta_path``: every other finder is asked first, so an installed
Frappe always wins, even one installed after the finder. It answers for the top-level name ``frappe``;
the stand-in's submodules (``frappe.utils.background_jobs``) are then found through the package's
``__path__`` like any package's. Any other submodule (``frappe.model.document``) is an empty module
whose names raise when used (compat/frappe/_unavailable.py), so a module importing one still imports.
The stand-in is named by its path here, not imported: this module sits below the layer it points at,
as ``runtime.TASK_MODULES`` names the task modules.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Sequence
from types import ModuleType

NAME = "frappe"
STAND_IN_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "compat", "frappe")


class StandInFinder(importlib.abc.MetaPathFinder):
    """Finds ``frappe`` as the stand-in package, when no finder before it found the real one."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname == NAME:
            return importlib.util.spec_from_file_location(
                NAME, os.path.join(STAND_IN_DIR, "__init__.py"), submodule_search_locations=[STAND_IN_DIR]
            )
        if fullname.startswith(f"{NAME}.") and is_stand_in(sys.modules.get(NAME)):
            return importlib.machinery.ModuleSpec(fullname, _StubLoader(), is_package=True)
        return None


class _StubLoader(importlib.abc.Loader):
    """A submodule of Frappe the stand-in does not have: its attributes raise when used."""

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return None

    def exec_module(self, module: ModuleType) -> None:
        name = module.__name__

        def getattr_(attr: str) -> object:
            return sys.modules[NAME].submodule_getattr(name, attr)

        module.__getattr__ = getattr_  # type: ignore[method-assign]


def install() -> None:
    """Put the finder at the end of ``sys.meta_path`` (once per process; forked children inherit it)."""
    if not any(isinstance(f, StandInFinder) for f in sys.meta_path):
        sys.meta_path.append(StandInFinder())


def is_stand_in(module: ModuleType | None) -> bool:
    """Whether ``module`` (say ``sys.modules.get("frappe")``) is benchcelery's stand-in."""
    return bool(module is not None and getattr(module, "IS_BENCHCELERY_STAND_IN", False))
