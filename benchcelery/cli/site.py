"""Bench and site management: init, new-site, new-app, use, set-config, show-config."""

from __future__ import annotations

from pathlib import Path

import click

from benchcelery.bench.layout import parse_config_value
from benchcelery.cli.base import CliContext, echo_json, format_option, pass_ctx
from benchcelery.deploy.scaffold import create_app, create_bench, create_site


@click.command("init")
@click.argument("path", type=click.Path(file_okay=False))
@click.option("--redis-url", help="redis_queue URL (default: redis://127.0.0.1:<free port from 11000>).")
@click.option("--example-app", is_flag=True, help="Also create and install the example app 'jobs_demo'.")
def init_cmd(path: str, redis_url: str | None, example_app: bool) -> None:
    """Create a bench at PATH (sites/, config/, logs/, Procfile)."""
    bench = create_bench(Path(path), redis_url=redis_url, example_app=example_app)
    conf = bench.common_config()
    click.echo(f"Created bench {bench.root} (bench_id {conf['bench_id']}, redis_queue {conf['redis_queue']})")


@click.command("new-site")
@click.argument("name")
@pass_ctx
def new_site_cmd(obj: CliContext, name: str) -> None:
    """Create sites/NAME/site_config.json."""
    create_site(obj.bench, name)
    click.echo(f"Created site {name}")


@click.command("new-app")
@click.argument("name")
@pass_ctx
def new_app_cmd(obj: CliContext, name: str) -> None:
    """Create an app skeleton in apps/NAME (hooks.py, tasks.py) and install it."""
    path = create_app(obj.bench, name)
    click.echo(f"Created app {name} in {path}")


@click.command("use")
@click.argument("site")
@pass_ctx
def use_cmd(obj: CliContext, site: str) -> None:
    """Set the default site."""
    obj.bench.require_site(site)
    obj.bench.update_config({"default_site": site})
    click.echo(f"Current Site set to {site}")


@click.command("set-config")
@click.argument("key")
@click.argument("value")
@click.option("-g", "--global", "global_", is_flag=True, help="Write common_site_config.json.")
@click.option("-p", "--parse", is_flag=True, help="Parse VALUE as JSON (e.g. a number or an object).")
@pass_ctx
def set_config_cmd(obj: CliContext, key: str, value: str, global_: bool, parse: bool) -> None:
    """Set KEY to VALUE in the site's config (or the common config with -g); "None" deletes KEY."""
    parsed = parse_config_value(value, parse)
    sites = [None] if global_ else obj.sites()
    for site in sites:
        updates: dict[str, object] = {key: parsed}
        if key == "redis_queue" and site is None and _cache_is_inits(obj.bench.common_config()):
            updates["redis_cache"] = None  # init's copy: the derived default follows the new queue
            click.echo("Removed redis_cache (written by bench init): frappe.cache() follows redis_queue")
        obj.bench.update_config(updates, site=site)


def _cache_is_inits(common: dict[str, object]) -> bool:
    """Whether ``redis_cache`` is what older ``bench init`` wrote: the queue server's next database.
    The user set it otherwise, and then it stays."""
    from benchcelery.bench.redis_url import next_db_url

    cache, queue = common.get("redis_cache"), common.get("redis_queue")
    return isinstance(cache, str) and isinstance(queue, str) and cache == next_db_url(queue)


@click.command("show-config")
@format_option
@click.option("--show-secrets", is_flag=True, help="Show passwords, secrets and URL passwords in clear.")
@pass_ctx
def show_config_cmd(obj: CliContext, fmt: str, show_secrets: bool) -> None:
    """Show the merged config (common overlaid by the site's); secrets masked unless --show-secrets.

    -f json is always an object keyed by site ({"site1.local": {...}}), one key per site, as in
    Frappe; outside any site (no --site, no default site) the common config under the key "".
    """
    from benchcelery.bench.schema import masked

    sites = obj.sites(required=False)
    configs = {site: obj.bench.merged_config(site) for site in sites} or {"": obj.bench.common_config()}
    if not show_secrets:
        configs = {site: masked(conf) for site, conf in configs.items()}
    if fmt == "json":
        # Always keyed by site, as Frappe prints it (the common config alone: keyed by "").
        echo_json(configs)
        return
    for site, conf in configs.items():
        if site:
            click.echo(f"-- {site} --")
        for key in sorted(conf):
            click.echo(f"{key}: {conf[key]}")


def _redis_host_command(name: str, key: str, what: str) -> click.Command:
    @click.command(name)
    @click.argument("host")
    @pass_ctx
    def command(obj: CliContext, host: str) -> None:
        from benchcelery.bench.config import mask_url

        url = redis_host_url(host)
        obj.bench.update_config({key: url})
        click.echo(f"{key} set to {mask_url(url)} in common_site_config.json")

    command.help = (
        f"Set {key} (the {what} Redis) in common_site_config.json. HOST is host:port[/db] or a full "
        "redis:// (rediss://, unix://) URL; a bare host:port gets redis:// in front, as in Frappe."
    )
    return command


def redis_host_url(host: str) -> str:
    """Frappe's rule: a value that does not start with ``redis`` gets ``redis://`` in front
    (``unix://`` URLs are kept as they are)."""
    host = host.strip()
    if host.lower().startswith(("redis", "unix://")):
        return host
    return f"redis://{host}"


set_redis_queue_host_cmd = _redis_host_command("set-redis-queue-host", "redis_queue", "queue")
set_redis_cache_host_cmd = _redis_host_command("set-redis-cache-host", "redis_cache", "cache")


def register(cli: click.Group) -> None:
    for command in (
        init_cmd,
        new_site_cmd,
        new_app_cmd,
        use_cmd,
        set_config_cmd,
        show_config_cmd,
        set_redis_queue_host_cmd,
        set_redis_cache_host_cmd,
    ):
        cli.add_command(command)
