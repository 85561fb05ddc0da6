"""The bench on disk: finding it, its sites and apps, and reading/writing its JSON config files.

Layout (Frappe's)::

    <bench>/sites/common_site_config.json   bench-wide config
    <bench>/sites/<site>/site_config.json   per-site config (wins over common)
    <bench>/sites/apps.txt                  installed apps, one importable package a line
    <bench>/config/  <bench>/logs/  <bench>/Procfile
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import secrets
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchcelery.bench.schema import check_value, site_name, validate
from benchcelery.errors import NotInBenchError, SiteNotFoundError, SiteNotSpecifiedError, ValidationError

COMMON_CONFIG = "common_site_config.json"
SITE_CONFIG = "site_config.json"
BENCH_PATH_ENV = "BENCH_PATH"
SITE_ENVS = ("BENCH_SITE", "FRAPPE_SITE")
_apps_cache: dict[str, tuple[tuple[int, int, int], tuple[str, ...]]] = {}


def derive_bench_id(root: Path) -> str:
    """Frappe's rule: the bench path without leading/trailing '/', other '/' replaced by '-' (and
    every character outside the bench id alphabet too, see keys.py)."""
    from benchcelery.bench.keys import sanitise_bench_id

    return sanitise_bench_id(str(root.resolve()).strip("/"))


@dataclass(frozen=True)
class Bench:
    root: Path

    @property
    def sites_path(self) -> Path:
        return self.root / "sites"

    @functools.cached_property
    def sites_dir(self) -> str:
        """``sites_path`` as a string, for the paths workers build for every job (no pathlib)."""
        return os.path.join(self.root, "sites")

    @property
    def config_path(self) -> Path:
        return self.root / "config"

    @property
    def logs_path(self) -> Path:
        return self.root / "logs"

    @property
    def common_config_file(self) -> Path:
        return self.sites_path / COMMON_CONFIG

    @property
    def name(self) -> str:
        return self.root.name

    def site_path(self, site: str) -> Path:
        return self.sites_path / site

    def site_config_file(self, site: str) -> Path:
        return self.site_path(site) / SITE_CONFIG

    # --- reading ---
    def common_config(self) -> dict[str, Any]:
        """common_site_config.json, every known key checked (schema.py; ValidationError)."""
        return validate(read_json(self.common_config_file), self.relative(self.common_config_file))

    def site_config(self, site: str) -> dict[str, Any]:
        self.require_site(site)
        path = self.site_config_file(site)
        return validate(read_json(path), self.relative(path))

    def relative(self, path: Path) -> str:
        """``path`` as error messages name it (relative to the bench)."""
        try:
            return str(path.relative_to(self.root))
        except ValueError:
            return str(path)

    def merged_config(self, site: str | None = None) -> dict[str, Any]:
        """common_site_config.json overlaid by the site's site_config.json (the site wins)."""
        conf = self.common_config()
        if site:
            conf.update(self.site_config(site))
        return conf

    @property
    def bench_id(self) -> str:
        value = self.common_config().get("bench_id")
        return str(value) if value else derive_bench_id(self.root)

    def sites(self) -> list[str]:
        """Every site of the bench, sorted: a real directory under sites/ (not a symlink) holding a
        site_config.json. ``--site`` accepts exactly these (``site_config_mtime``)."""
        if not self.sites_path.is_dir():
            return []
        return sorted(p.name for p in self.sites_path.iterdir() if self.site_exists(p.name))

    def site_exists(self, site: str) -> bool:
        return self.site_config_mtime(site) is not None

    def site_config_mtime(self, site: str) -> float | None:
        """When the site's site_config.json last changed; None when there is no such site: a site is
        a real directory of the bench (a symlink would read config from elsewhere). Two stats, no
        pathlib: workers check this for every job."""
        if site_name(site):
            return None
        try:
            if not stat.S_ISDIR(os.lstat(f"{self.sites_dir}/{site}").st_mode):  # a valid name holds no '/'
                return None
            st = os.stat(f"{self.sites_dir}/{site}/{SITE_CONFIG}")
        except (OSError, ValueError):
            return None
        return st.st_mtime if stat.S_ISREG(st.st_mode) else None

    def site_problem(self, site: str) -> str | None:
        """Why ``sites/<site>`` is not a site although something by that name is there, or None."""
        if site_name(site):
            return None
        path = f"{self.sites_dir}/{site}"
        if os.path.islink(path):
            return f"sites/{site} is a symlink: a site must be a directory of the bench"
        if os.path.lexists(path) and not os.path.isdir(path):
            return f"sites/{site} is a file, not a site directory"
        return None

    def require_site(self, site: str) -> None:
        if not self.site_exists(site):
            problem = self.site_problem(site) if isinstance(site, str) else None
            if problem:
                raise ValidationError(problem)
            raise SiteNotFoundError(site if isinstance(site, str) and len(site) <= 200 else f"{str(site)[:200]}...")

    def activate(self) -> None:
        """Make apps kept in ``<bench>/apps/<app>/`` importable (pip-installed apps need nothing), and
        ``import frappe`` too (util/frappe_import.py)."""
        import sys

        apps_dir = str(self.root / "apps")
        if os.path.isdir(apps_dir) and apps_dir not in sys.path:
            sys.path.insert(0, apps_dir)
        # Apps' `import frappe` finds the job-API stand-in unless the real Frappe is installed.
        from benchcelery.util import frappe_import

        frappe_import.install()

    def apps(self) -> list[str]:
        """Installed apps (sites/apps.txt), re-read only when the file changes."""
        return list(self.app_names())

    def app_names(self) -> tuple[str, ...]:
        """``apps`` without the copy, for the checks made for every enqueue and job."""
        path = self._apps_file  # not pathlib: this runs for every enqueue and job
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return ()
        # Size and inode too: two writes within one tick of the file system's clock share an mtime.
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        cached = _apps_cache.get(path)
        if cached is None or cached[0] != stamp:
            with open(path) as fh:
                cached = (stamp, tuple(line.strip() for line in fh if line.strip()))
            _apps_cache[path] = cached
        return cached[1]

    @functools.cached_property
    def _apps_file(self) -> str:
        return f"{self.sites_dir}/apps.txt"

    def resolve_sites(self, site: str | None, required: bool = True) -> list[str]:
        """Frappe's site resolution: ``--site NAME|all``, then $BENCH_SITE/$FRAPPE_SITE, then default_site.

        Raises SiteNotSpecifiedError (when ``required``) or SiteNotFoundError.
        """
        if not site:
            site = next((os.environ[e] for e in SITE_ENVS if os.environ.get(e)), None)
        if not site:
            site = self.common_config().get("default_site") or None
        if not site:
            if required:
                raise SiteNotSpecifiedError()
            return []
        if site == "all":
            return self.sites()
        self.require_site(site)
        return [site]

    # --- writing ---
    def update_config(self, updates: dict[str, Any], site: str | None = None) -> dict[str, Any]:
        """Set keys (a value of None deletes the key) in the site's or the common config, atomically."""
        path = self.site_config_file(site) if site else self.common_config_file
        if site:
            self.require_site(site)
        for key, value in updates.items():
            check_value(key, value, self.relative(path))  # refused before anything is written
        with locked_json(path) as data:
            for key, value in updates.items():
                if value is None:
                    data.pop(key, None)
                else:
                    data[key] = value
            return dict(data)

    def new_site(self, site: str, config: dict[str, Any] | None = None) -> Path:
        problem = site_name(site)
        if problem:
            shown = site if len(site) <= 100 else f"{site[:100]}... ({len(site)} characters)"
            raise ValidationError(f"Invalid site name {shown!r}: {problem}")
        if self.site_exists(site):
            raise ValidationError(f"Site {site} already exists")
        problem = self.site_problem(site)
        if problem:
            raise ValidationError(f"Cannot create site {site}: {problem}")
        path = self.site_path(site)
        (path / "logs").mkdir(parents=True, exist_ok=True)
        write_json(path / SITE_CONFIG, dict(config or {}))
        return path


def find_bench(explicit: str | os.PathLike[str] | None = None, start: Path | None = None) -> Bench:
    """The bench at ``explicit`` / $BENCH_PATH, else the nearest one above ``start`` (the cwd)."""
    given = explicit or os.environ.get(BENCH_PATH_ENV)
    if given:
        root = Path(given).expanduser().resolve()
        if not (root / "sites").is_dir():
            raise NotInBenchError(f"{root} is not a bench directory (no sites/ folder)")
        return Bench(root)
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / "sites" / COMMON_CONFIG).is_file() or (
            (candidate / "sites").is_dir() and (candidate / "sites" / "apps.txt").is_file()
        ):
            return Bench(candidate)
    raise NotInBenchError(
        "Command not being executed in bench directory (no bench found above "
        f"{here}; use --bench PATH or set {BENCH_PATH_ENV})"
    )


def read_json(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except UnicodeDecodeError as exc:
        raise ValidationError(f"{path} is not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise ValidationError(f"{path} cannot be read: {exc.strerror or exc}") from None
    if not text.strip():
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValidationError(f"{path} is not valid JSON: {exc}") from None
    except RecursionError:
        raise ValidationError(f"{path} is nested too deeply") from None
    if not isinstance(data, dict):
        raise ValidationError(f"{path} must hold a JSON object")
    return data


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write atomically: a temporary file in the same folder, fsynced, then renamed over."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=1, sort_keys=True)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def locked_json(path: Path) -> Iterator[dict[str, Any]]:
    """Read-modify-write a JSON config under an exclusive lock, so concurrent writers never lose keys."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_path = path.parent / f".{path.name}.lock"
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            data = read_json(path)
            yield data
            write_json(path, data)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def ensure_secret(path: Path, key: str) -> str:
    """The random secret at ``key`` of the JSON config ``path`` (a token-signing key), generated
    there when missing. Re-read under the file's lock, so concurrent callers agree on one secret."""
    with locked_json(path) as data:
        if not data.get(key):
            data[key] = secrets.token_urlsafe(32)
        return str(data[key])


def parse_config_value(value: str, parse: bool = False) -> Any:
    """Frappe's ``set-config`` parsing: "0"/"1" -> int, "true"/"false" -> bool, "None" -> delete.

    With ``parse`` the value is read as JSON (or a Python literal), e.g. a dict or a number.
    """
    if parse:
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            import ast

            try:
                return ast.literal_eval(value)
            except (ValueError, SyntaxError):
                raise ValidationError(f"Cannot parse value {value!r}") from None
    if value in ("0", "1"):
        return int(value)
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    if value == "None":
        return None
    return value
