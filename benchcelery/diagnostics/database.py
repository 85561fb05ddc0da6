"""The site's database, as ``doctor`` checks it: configured? reachable with its credentials?

Frappe's keys in site_config.json: ``db_type`` (mariadb, the default, or postgres), ``db_host``,
``db_port``, ``db_name``, ``db_user`` (defaults to db_name), ``db_password``; or one ``db_url``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from benchcelery.bench.config import DEFAULTS

CONNECT_TIMEOUT = 3


@dataclass
class DatabaseStatus:
    status: str  # connected / unreachable / not configured
    detail: str = ""
    db_type: str | None = None

    @property
    def ok(self) -> bool:
        return self.status != "unreachable"


def db_params(conf: dict[str, Any]) -> dict[str, Any] | None:
    """Connection parameters from a site config, or None when no database is configured."""
    if conf.get("db_url"):
        url = urlsplit(str(conf["db_url"]))
        scheme = url.scheme.split("+", 1)[0]
        db_type = "postgres" if scheme in ("postgres", "postgresql") else "mariadb"
        return {
            "db_type": db_type,
            "host": url.hostname or "127.0.0.1",
            "port": url.port,
            "user": unquote(url.username or ""),
            "password": unquote(url.password or ""),
            "database": url.path.lstrip("/"),
        }
    if not conf.get("db_name"):
        return None
    named = str(conf.get("db_type", DEFAULTS["db_type"])).lower()
    db_type = "postgres" if named in ("postgres", "postgresql") else "mariadb"
    return {
        "db_type": db_type,
        "host": conf.get("db_host") or DEFAULTS["db_host"],
        "port": conf.get("db_port"),
        "user": conf.get("db_user") or conf.get("db_name"),
        "password": conf.get("db_password") or "",
        "database": conf.get("db_name"),
    }


def check_database(conf: dict[str, Any]) -> DatabaseStatus:
    params = db_params(conf)
    if params is None:
        return DatabaseStatus("not configured")
    db_type = params.pop("db_type")
    try:
        if db_type == "postgres":
            import psycopg

            with psycopg.connect(
                host=params["host"],
                port=int(params["port"] or 5432),
                dbname=params["database"],
                user=params["user"],
                password=params["password"],
                connect_timeout=CONNECT_TIMEOUT,
            ) as conn:
                conn.execute("SELECT 1")
        else:
            import pymysql

            conn = pymysql.connect(
                host=params["host"],
                port=int(params["port"] or 3306),
                user=params["user"],
                password=params["password"],
                database=params["database"],
                connect_timeout=CONNECT_TIMEOUT,
            )
            try:
                with conn.cursor() as cur:
                    cur.execute("SELECT 1")
            finally:
                conn.close()
    except ImportError as exc:
        return DatabaseStatus("unreachable", f"driver missing ({exc.name}); pip install 'benchcelery[db]'", db_type)
    except Exception as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if params["password"]:
            text = text.replace(params["password"], "***")
        return DatabaseStatus("unreachable", text, db_type)
    return DatabaseStatus("connected", f"{db_type} {params['database']}@{params['host']}", db_type)
