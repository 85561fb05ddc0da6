"""Whether a site's scheduler is active, from Frappe's config keys in site_config.json.

Keys (merged config: common_site_config.json overlaid by site_config.json, so a bench-wide value
can be set in the common file and overridden per site):

==================  =====================================================  ==================
key                 meaning                                                written by
==================  =====================================================  ==================
enable_scheduler    main switch; **missing means enabled** (see below)     enable-/disable-scheduler,
                                                                           scheduler enable/disable
pause_scheduler     temporarily skipped                                    scheduler pause/resume
maintenance_mode    skipped (and, in Frappe, the site answers 503)         set-maintenance-mode
disable_scheduler   a config-level off switch (e.g. on dev benches)        by hand / set-config
==================  =====================================================  ==================

Frappe keeps ``enable_scheduler`` in the database, where new sites start with it off. There is no
database here, so a site without the key is enabled: a fresh bench schedules out of the box (the
guide's status example), and a site migrated from Frappe carries an explicit 0 or 1.

Values are read leniently (Frappe users end up with ``"1"`` strings, ints and booleans): 1, true,
"1", "true", "yes", "on" are true; 0, false, "", "0", "false", "no", "off", null are false.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from benchcelery.bench.config import DEFAULTS
from benchcelery.bench.layout import Bench, read_json

ENABLED, DISABLED, PAUSED = "enabled", "disabled", "paused"
_FALSE = {"", "0", "false", "no", "off", "none", "null"}


def truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in _FALSE
    return bool(value)


@dataclass(frozen=True)
class SiteState:
    site: str
    state: str  # enabled / disabled / paused
    reasons: tuple[str, ...] = ()  # why the scheduler skips the site (empty when active)

    @property
    def active(self) -> bool:
        return not self.reasons


def state_from_config(site: str, conf: dict[str, Any]) -> SiteState:
    """Frappe's ``is_scheduler_inactive`` order: maintenance, pause, disable_scheduler, enable_scheduler."""
    reasons = []
    if truthy(conf.get("maintenance_mode")):
        reasons.append("Maintenance mode is ON")
    paused = truthy(conf.get("pause_scheduler"))
    if paused:
        reasons.append("paused (pause_scheduler is set; bench scheduler resume resumes it)")
    disabled = False
    if truthy(conf.get("disable_scheduler")):
        reasons.append("disabled (disable_scheduler is set; bench scheduler enable turns it on)")
        disabled = True
    if not truthy(conf.get("enable_scheduler", DEFAULTS["enable_scheduler"])):
        reasons.append("enable_scheduler is off (bench enable-scheduler turns it on)")
        disabled = True
    if disabled or (reasons and not paused):
        state = DISABLED
    elif paused:
        state = PAUSED
    else:
        state = ENABLED
    return SiteState(site, state, tuple(reasons))


def site_state(bench: Bench, site: str) -> SiteState:
    return state_from_config(site, bench.merged_config(site))


def _stamp(path: str) -> tuple[int, int, int]:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return (0, 0, 0)
    return (st.st_mtime_ns, st.st_size, st.st_ino)


@dataclass
class SiteStates:
    """Every site's state, re-read only for config files that changed (one stat per site a tick).

    ``refresh()`` returns True when the set of sites changed (so entries need reconciling).
    """

    bench: Bench
    states: dict[str, SiteState] = field(default_factory=dict)
    _stamps: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    _common_stamp: tuple[int, int, int] | None = None
    _common: dict[str, Any] = field(default_factory=dict)

    def refresh(self) -> bool:
        common_stamp = _stamp(str(self.bench.common_config_file))
        common_changed = common_stamp != self._common_stamp
        if common_changed:
            try:
                self._common = read_json(self.bench.common_config_file)
                self._common_stamp = common_stamp
            except Exception:  # half-written: keep the last good values, re-read next time
                common_changed = False
        sites = self.bench.sites()
        changed_sites = set(sites) != set(self.states)
        states: dict[str, SiteState] = {}
        stamps: dict[str, tuple[int, int, int]] = {}
        for site in sites:
            path = str(self.bench.site_config_file(site))
            stamp = _stamp(path)
            old = self.states.get(site)
            if old is not None and not common_changed and self._stamps.get(site) == stamp:
                states[site], stamps[site] = old, stamp
                continue
            try:
                conf = {**self._common, **read_json(self.bench.site_config_file(site))}
            except Exception as exc:
                # A half-written hand edit: keep the last good state (a new site waits) and re-read
                # the file next time.
                states[site] = old or SiteState(site, DISABLED, (f"site_config.json unreadable: {exc}",))
                stamps[site] = (0, 0, 0)
                continue
            states[site], stamps[site] = state_from_config(site, conf), stamp
        self.states, self._stamps = states, stamps
        return changed_sites

    @property
    def common(self) -> dict[str, Any]:
        """common_site_config.json as of the last ``refresh()``."""
        return self._common

    def get(self, site: str) -> SiteState | None:
        return self.states.get(site)

    @property
    def sites(self) -> list[str]:
        return list(self.states)


# action -> config updates (Frappe's keys and value types) and the word printed for it.
ACTIONS: dict[str, dict[str, Any]] = {
    "enable": {"enable_scheduler": 1},
    "disable": {"enable_scheduler": 0},
    "pause": {"pause_scheduler": True},
    "resume": {"pause_scheduler": False},
    "maintenance_on": {"maintenance_mode": 1},
    "maintenance_off": {"maintenance_mode": 0},
}
ACTION_WORDS = {"enable": ENABLED, "disable": DISABLED, "pause": PAUSED, "resume": "resumed"}


def apply_action(bench: Bench, site: str, action: str) -> SiteState:
    """Write ``action``'s keys to the site's site_config.json (atomic, locked); returns the new state.

    Like Frappe, each action touches only its own key: ``enable`` does not resume a paused site.
    """
    try:
        updates = ACTIONS[action]
    except KeyError:
        raise ValueError(f"unknown scheduler action {action!r}") from None
    conf = bench.update_config(updates, site=site)
    return state_from_config(site, {**bench.common_config(), **conf})
