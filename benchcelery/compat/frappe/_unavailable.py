"""What the stand-in answers for a name of Frappe it does not have (``frappe.db``, ``frappe.get_doc``,
``frappe.utils.now``...): an object that raises ``FrappeUnavailableError`` naming it when used
(called, subclassed, iterated, tested), so importing a module that mentions it still works."""

from __future__ import annotations

from typing import Any, NoReturn

from benchcelery.errors import BenchError


class FrappeUnavailableError(BenchError, NotImplementedError):
    """A Frappe name outside the background-job API this bench provides."""


def refuse(name: str) -> NoReturn:
    raise FrappeUnavailableError(
        f"{name} is not available: Frappe is not installed, and this bench provides only Frappe's "
        "background-job API (frappe.enqueue, frappe.local, frappe.utils.background_jobs...; "
        "README 'Frappe API in jobs' lists it)"
    )


class Unavailable:
    """Stands for ``name``; raises FrappeUnavailableError when used."""

    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        object.__setattr__(self, "_name", name)

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        return Unavailable(f"{self._name}.{attr}")

    def __setattr__(self, attr: str, value: Any) -> NoReturn:
        refuse(self._name)

    def __call__(self, *args: Any, **kwargs: Any) -> NoReturn:
        refuse(self._name)

    def __mro_entries__(self, bases: tuple[Any, ...]) -> NoReturn:
        refuse(self._name)

    def __bool__(self) -> bool:
        refuse(self._name)

    def __iter__(self) -> NoReturn:
        refuse(self._name)

    def __getitem__(self, key: Any) -> NoReturn:
        refuse(self._name)

    def __repr__(self) -> str:
        return f"<{self._name}: not available without Frappe>"


def module_getattr(module: str, name: str) -> Any:
    """A stand-in module's ``__getattr__`` for the names it does not define."""
    if name.startswith("_"):
        raise AttributeError(f"module {module!r} has no attribute {name!r}")
    return Unavailable(f"{module}.{name}")
