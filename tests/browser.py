"""Headless Chromium for the dashboard tests and screenshots: Debian's ``chromium`` driven through
its matching ``chromium-driver`` (never a downloaded browser or driver)."""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
CHROMEDRIVER = "/usr/bin/chromedriver"


def find_chromium() -> tuple[str, str] | None:
    """(browser, driver) paths, or None when either is missing."""
    browser = next((p for p in CHROMIUM if os.access(p, os.X_OK)), None) or shutil.which("chromium")
    driver = CHROMEDRIVER if os.access(CHROMEDRIVER, os.X_OK) else shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def chrome(width: int = 1280, height: int = 900) -> Any:
    """A headless Chromium WebDriver with a fresh profile (quit() it; the profile is left in /tmp)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    found = find_chromium()
    if found is None:
        raise RuntimeError("chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)")
    browser, driver = found
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in (
        "--headless=new",
        "--no-sandbox",  # tests run as root in CI
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        f"--window-size={width},{height}",
        f"--user-data-dir={tempfile.mkdtemp(prefix='bench-chromium-')}",
    ):
        options.add_argument(flag)
    # An explicit driver path: selenium-manager never runs (it would try to download one).
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)
