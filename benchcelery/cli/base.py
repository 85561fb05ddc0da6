"""What every command shares: the lazy context object, error handling, output rendering.

Resources (bench, settings, Redis, the Celery app) are built on first use, so ``--help`` and usage
errors never touch Redis, and read commands never import Celery.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import click

from benchcelery.bench.layout import Bench, find_bench
from benchcelery.errors import EXIT_FAILURE, EXIT_UNAVAILABLE, BenchError, ValidationError
from benchcelery.util.text import visible

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class CliContext:
    site_option: str | None = None
    bench_option: str | None = None
    verbose: bool = False
    _bench: Bench | None = field(default=None, repr=False)
    _runtime: Any = field(default=None, repr=False)

    @property
    def bench(self) -> Bench:
        if self._bench is None:
            self._bench = find_bench(self.bench_option)
        return self._bench

    def sites(self, required: bool = True) -> list[str]:
        """Sites selected by --site (``all`` = every site), $BENCH_SITE/$FRAPPE_SITE or default_site."""
        return self.bench.resolve_sites(self.site_option, required=required)

    def site(self) -> str:
        """The one site a single-site command works on (the first when --site all)."""
        sites = self.sites()
        if not sites:
            raise BenchError("No sites in this bench")
        return sites[0]

    def runtime(self, username: str | None = None, password: str | None = None, strategy: str | None = None):  # type: ignore[no-untyped-def]
        """The bench's runtime (settings + lazy Redis and Celery app), made current for this process."""
        if self._runtime is None or username or password or strategy:
            from benchcelery.bench.config import Settings
            from benchcelery.runtime import Runtime, set_runtime

            settings = Settings.from_bench(self.bench, username=username, password=password)
            self._runtime = Runtime(settings, strategy=strategy)
            set_runtime(self._runtime)
        return self._runtime


pass_ctx = click.make_pass_decorator(CliContext, ensure=True)


def queues_option(obj: CliContext, value: str | None, param: str = "--queue") -> list[str] | None:
    """Validate a comma-separated ``--queue`` value against the bench's queues (no Redis): None when
    empty; an unknown queue is a usage error (exit 2)."""
    if not value:
        return None
    from benchcelery.bench.config import Settings

    try:
        return Settings.from_bench(obj.bench).parse_queues(value)
    except ValidationError as exc:
        raise click.BadParameter(str(exc), ctx=click.get_current_context(silent=True), param_hint=f"'{param}'")


def usage_error(message: str) -> click.UsageError:
    """A usage error (exit 2) for the running command, shown with its usage line."""
    return click.UsageError(message, ctx=click.get_current_context(silent=True))


class BenchGroup(click.Group):
    """Turns expected errors into one line on stderr and their exit code, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BenchError as exc:
            if exc.exit_code == EXIT_UNAVAILABLE:
                fail(f"{exc}{unreachable_hint(ctx, str(exc))}", exc.exit_code)
            fail(str(exc), exc.exit_code)
        except Exception as exc:
            code = _connection_error_code(exc)
            if code is not None:
                message = _unreachable(ctx, exc)
                fail(f"{message}{unreachable_hint(ctx, message)}", code)
            redis = sys.modules.get("redis")
            if redis is None or not isinstance(exc, redis.ResponseError):
                raise
            # Redis answered with an error (out of memory, a read-only replica, an ACL refusal...).
            fail(f"Redis{_where(ctx)} refused the command: {type(exc).__name__}: {exc}")


def _connection_error_code(exc: Exception) -> int | None:
    redis = sys.modules.get("redis")
    if redis is not None and isinstance(exc, redis.ConnectionError | redis.TimeoutError):
        return EXIT_UNAVAILABLE
    kombu_exc = sys.modules.get("kombu.exceptions")
    if kombu_exc is not None and isinstance(exc, kombu_exc.OperationalError):
        return EXIT_UNAVAILABLE
    return None


def _unreachable(ctx: click.Context, exc: Exception) -> str:
    """The one line every command prints for an unreachable Redis (as connection.check words it)."""
    from benchcelery.store.connection import describe

    return f"Redis{_where(ctx)} is unreachable: {describe(exc)}"


def unreachable_hint(ctx: click.Context, message: str) -> str:
    """What to check after an unreachable (or refusing) queue Redis: where its address or
    credentials come from, and in a development bench whether ``bench start`` (which runs its
    Redis) is running. Empty when no bench is known."""
    import os

    from benchcelery.bench.config import REDIS_QUEUE_ENVS
    from benchcelery.store.sentinel import is_sentinel_url

    obj = ctx.find_object(CliContext)
    if obj is None or obj._bench is None:
        return ""
    config = "sites/common_site_config.json"
    if "authentication failed" in message:
        return f" (check the ACL user: rq_username and rq_password in {config})"
    env = next((e for e in REDIS_QUEUE_ENVS if os.environ.get(e)), None)
    if env:
        return f" (the address comes from ${env}: check it)"
    rt = obj._runtime
    url = rt.settings.redis_url if rt is not None else ""
    if is_sentinel_url(url):
        return f" (check redis_queue and sentinel_password in {config}, and that the sentinels run)"
    hint = f"check redis_queue in {config}"
    if _runs_own_redis(obj.bench.root / "Procfile") and _is_loopback(url):
        hint = f"is `bench start` running? Else {hint}"
    return f" ({hint})"


def _runs_own_redis(procfile: Any) -> bool:
    """True when the bench's Procfile (development) starts its queue Redis."""
    try:
        text = procfile.read_text()
    except OSError:
        return False
    return any(line.split(":", 1)[0].strip() == "redis_queue" for line in text.splitlines())


def _is_loopback(url: str) -> bool:
    from urllib.parse import urlsplit

    if url.startswith("unix://"):
        return True
    try:
        host = urlsplit(url).hostname or "127.0.0.1"
    except ValueError:
        return False
    return host in ("localhost", "::1") or host.startswith("127.")


def _where(ctx: click.Context) -> str:
    obj = ctx.find_object(CliContext)
    rt = obj._runtime if obj is not None else None
    return f" at {rt.settings.display_url}" if rt is not None else ""


MAX_ERROR = 600  # characters: an error line never echoes a huge input back in full


def fail(message: str, code: int = EXIT_FAILURE) -> None:
    message = visible(" ".join(message.split("\n")))  # an error may echo a job id or exception text
    if len(message) > MAX_ERROR:
        message = f"{message[:MAX_ERROR]}... (truncated)"
    click.secho(message, fg="red" if code != 1 else "yellow", err=True)
    sys.exit(code)


def table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]], indent: str = "") -> list[str]:
    """Rows as aligned columns under a header row (the last column is not padded); control
    characters and line breaks in a cell are shown escaped (``\\x1b``)."""
    rows = [tuple(visible(cell, lines=False) for cell in row) for row in rows]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header) - 1)]
    return [
        indent + "  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)), row[-1]]).rstrip()
        for row in [header, *rows]
    ]


def plural(n: int, word: str) -> str:
    """``1 job``, ``2 jobs``."""
    return f"{n} {word}{'' if n == 1 else 's'}"


def format_option(f: F) -> F:
    return click.option(
        "-f",
        "--format",
        "fmt",
        type=click.Choice(["text", "json"]),
        default="text",
        show_default=True,
        help="Output format (json has a stable schema).",
    )(f)


def echo_text(text: str) -> None:
    """Print text that may hold job data (ids, kwargs, exception text, tracebacks): its control
    characters are shown escaped, never sent to the terminal raw."""
    click.echo(visible(text))


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False, default=str))
