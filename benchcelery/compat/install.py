"""``import benchcelery.compat.install`` makes ``import frappe`` work in an app's own script (the bench
commands, workers and ``benchcelery.init`` do this themselves); the real Frappe, if installed, wins."""

from __future__ import annotations

from benchcelery.util.frappe_import import install

install()
