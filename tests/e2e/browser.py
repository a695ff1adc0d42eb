"""A real headless Chromium from the distribution's packages, driven by Selenium.

Debian's `chromium` and `chromium-driver` (`.ci/run` installs them). The
driver is named explicitly, so Selenium Manager never downloads anything. On
a developer's machine without them the browser tests skip; under
STOCKADE_CI=1 they fail instead, so CI can never pass by skipping them.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SCREENSHOTS = Path("/tmp/stockade-dashboard-screenshots")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1400,1000",
)


def need_browser() -> None:
    """Skip (fail under STOCKADE_CI=1) unless Chromium, its driver and Selenium are all here."""
    problems = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if importlib.util.find_spec("selenium") is None:
        problems.append("the selenium package")
    if problems:
        message = f"browser tests need {', '.join(problems)} (apt-get install chromium chromium-driver)"
        if os.environ.get("STOCKADE_CI") == "1":
            pytest.fail(message)
        pytest.skip(message)


class Browser:
    """One Chromium with a fresh profile; `close()` ends it and removes the profile."""

    def __init__(self) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        self.profile = tempfile.mkdtemp(prefix="stk-chromium-")
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={self.profile}")
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.driver: Any = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
        self.driver.set_page_load_timeout(60)

    def console_errors(self) -> list[dict[str, Any]]:
        return [e for e in self.driver.get_log("browser") if e.get("level") == "SEVERE"]

    def screenshot(self, name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        assert self.driver.save_screenshot(str(path)), f"screenshot {path} not saved"
        return path

    def close(self) -> None:
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self.profile, ignore_errors=True)
