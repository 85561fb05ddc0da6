"""``bench console``'s namespace: the ``frappe`` stand-in (compat/frappe) and the ``rq`` one
(compat/rq.py), so the guide's console snippets run as written::

    >>> frappe.enqueue('my_module.my_function', queue='short')
    >>> frappe.cache().ping()
    >>> from rq import Queue
    >>> from frappe.utils.background_jobs import get_redis_conn
    >>> q = Queue('default', connection=get_redis_conn())
    >>> q.failed_job_registry.get_job_ids()
"""

from __future__ import annotations

import importlib
import sys
import types

from benchcelery.util import frappe_import


def install_console_shims() -> types.ModuleType:
    """Make ``import frappe`` and ``from rq import Queue`` answer from this bench; returns the stand-in.

    Without Frappe installed, ``frappe`` is the stand-in for the whole process (as in workers). With
    it installed, the console's ``frappe`` name is still the stand-in (the real one would need its
    database), loaded under its own module name, and ``import frappe`` is the real Frappe. ``rq`` is
    the stand-in in the console process (the real rq, if installed, is shadowed there).
    """
    from benchcelery.compat import rq

    frappe_import.install()
    frappe = importlib.import_module("frappe")
    if not frappe_import.is_stand_in(frappe):
        frappe = importlib.import_module("benchcelery.compat.frappe")
    sys.modules["rq"] = rq
    return frappe
