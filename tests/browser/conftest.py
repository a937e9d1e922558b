"""Headless Chromium for the browser tests (Debian's ``chromium`` + ``chromium-driver``).

``.ci/run`` installs both when they are missing; where neither they nor another
Chromium/chromedriver pair can be found, the browser tests skip, saying so. Set
``TRAJLOOM_CHROMIUM`` / ``TRAJLOOM_CHROMEDRIVER`` to use another pair, and
``TRAJLOOM_REQUIRE_BROWSER=1`` (``.ci/run`` does, once Chromium is installed) to fail
instead of skipping. Screenshots go under each test's tmp folder.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
DRIVERS = ("chromedriver", "chromium-driver")


def _find(env: str, names: tuple[str, ...]) -> str | None:
    if os.environ.get(env):
        return os.environ[env]
    return next((p for n in names if (p := shutil.which(n))), None)


@pytest.fixture(scope="session")
def chromium_paths() -> tuple[str, str]:
    """(browser, driver) executables, or skip with the reason and the install command."""
    browser = _find("TRAJLOOM_CHROMIUM", BROWSERS)
    driver = _find("TRAJLOOM_CHROMEDRIVER", DRIVERS)
    if browser is None or driver is None:
        if os.environ.get("TRAJLOOM_REQUIRE_BROWSER") == "1":
            pytest.fail("TRAJLOOM_REQUIRE_BROWSER=1 but no Chromium + chromedriver was found")
        pytest.skip(
            "no Chromium + chromedriver on this machine (install: apt-get install chromium "
            "chromium-driver, or set TRAJLOOM_CHROMIUM / TRAJLOOM_CHROMEDRIVER)"
        )
    return browser, driver


@pytest.fixture
def browser(chromium_paths) -> Iterator[object]:
    """A headless Chromium driven by selenium, logging the page's console."""
    webdriver = pytest.importorskip("selenium.webdriver")
    binary, driver = chromium_paths
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,1000",
        "--autoplay-policy=no-user-gesture-required",
        "--allow-file-access-from-files",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = webdriver.ChromeService(executable_path=driver)
    chrome = webdriver.Chrome(options=options, service=service)
    chrome.set_page_load_timeout(60)
    try:
        yield chrome
    finally:
        chrome.quit()


@pytest.fixture
def console_errors(browser) -> Callable[[], list[dict]]:
    """A function giving the page's console messages of level SEVERE since its last call."""
    return lambda: [e for e in browser.get_log("browser") if e.get("level") == "SEVERE"]


@pytest.fixture
def screenshot(browser, tmp_path) -> Callable[[str], Path]:
    """A function saving the page as ``<tmp>/screenshots/<name>.png``; returns the path."""

    def save(name: str) -> Path:
        path = tmp_path / "screenshots" / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(path))
        return path

    return save
