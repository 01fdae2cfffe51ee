"""A real headless Chromium (Debian's chromium and chromium-driver), driven with Selenium.

Started as root-safe as it can be: ``--no-sandbox`` (Chromium's sandbox refuses to run as root), a
fresh profile per session, and none of its background traffic (updates, sync, component downloads).
``evil.example`` resolves to 127.0.0.1 inside this browser only, so a test can send the endpoint a
request whose Host names another site, as DNS rebinding would.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
REBOUND_HOST = "evil.example"


def missing_browser() -> list[str]:
    return [name for name, path in (("chromium", CHROMIUM), ("chromium-driver", CHROMEDRIVER))
            if shutil.which(path) is None]


@contextmanager
def headless_chromium() -> Iterator[webdriver.Chrome]:
    profile = tempfile.mkdtemp(prefix="hotfolder-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
        f"--user-data-dir={profile}", "--window-size=1400,1200",
        f"--host-resolver-rules=MAP {REBOUND_HOST} 127.0.0.1",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
