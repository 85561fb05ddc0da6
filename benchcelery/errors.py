"""Errors with the exit code a command should end with.

Exit codes: 0 ok (also "nothing to do"), 1 failure, 2 usage, 69 Redis unreachable (EX_UNAVAILABLE).
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 69


class BenchError(Exception):
    """An expected failure: the CLI prints its message as one line and exits with ``exit_code``."""

    exit_code = EXIT_FAILURE


class NotInBenchError(BenchError):
    pass


class SiteNotSpecifiedError(BenchError):
    def __init__(self) -> None:
        super().__init__("Please specify --site sitename")


class SiteNotFoundError(BenchError):
    def __init__(self, site: str) -> None:
        super().__init__(f"Site {site} does not exist!")
        self.site = site


class ValidationError(BenchError):
    """Bad input, refused before anything is written."""


class JobNotFoundError(BenchError):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"No job {job_id[:200]}")
        self.job_id = job_id


class RedisUnavailableError(BenchError):
    exit_code = EXIT_UNAVAILABLE
