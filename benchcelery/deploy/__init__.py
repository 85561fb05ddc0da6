"""Running a bench: Procfile, supervisor, systemd and Redis files rendered from the templates in
the top-level ``deploy/`` folder (shipped as ``benchcelery/deploy_templates``), the Redis ACL, and
the ``bench start`` process manager.

``plan`` decides which processes a bench runs (data only); ``files`` renders them into files;
``acl`` writes the Redis users; ``procman`` runs a Procfile in the foreground; ``queue_redis``
runs the queue Redis (``bench run-redis``).
"""

from __future__ import annotations

from benchcelery.deploy.files import write_dev_files

__all__ = ["write_dev_files"]
