"""Running the dashboard: address checks, logging, uvicorn."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from benchcelery.dashboard import auth
from benchcelery.errors import BenchError
from benchcelery.runtime import Runtime
from benchcelery.util.net import check_port_free, is_loopback

logger = logging.getLogger("benchcelery.dashboard")


@dataclass(frozen=True)
class ServeOptions:
    host: str
    port: int
    read_only: bool = False
    log_level: str = "info"


def check_auth(rt: Runtime, host: str) -> None:
    """Login is always required. Off the loopback interface the bench must already have a login
    (``bench dashboard token``); on loopback the secret is created so a token can be made later."""
    if auth.bench_secret(rt.bench) is None:
        if not is_loopback(host):
            raise BenchError(
                f"Refusing to listen on {host} without a login configured: "
                "create one with `bench dashboard token --user NAME` first"
            )
        auth.bench_secret(rt.bench, create=True)


def serve(rt: Runtime, options: ServeOptions) -> None:
    """Serve the dashboard until SIGINT/SIGTERM. Raises BenchError for a refused address or a taken port."""
    import uvicorn

    from benchcelery.dashboard.app import DashboardOptions, create_app

    check_auth(rt, options.host)
    check_port_free(options.host, options.port)
    app = create_app(rt, DashboardOptions(read_only=options.read_only))
    logger.info(
        "Dashboard of bench %s on http://%s:%d%s; log in with a token from `bench dashboard token --user NAME`",
        rt.settings.bench_id,
        options.host,
        options.port,
        " (read-only)" if options.read_only else "",
    )
    config = uvicorn.Config(
        app, host=options.host, port=options.port, log_level=options.log_level, access_log=False, log_config=None
    )
    uvicorn.Server(config).run()
