"""Real-browser tests: Debian's headless Chromium, driven through Selenium and its ChromeDriver.

`tests/browser.sh` (chained in `make unit`) exports ATELIER_TEST_CHROMIUM and
ATELIER_TEST_CHROMEDRIVER; without them the `chrome` fixture skips, and under CI (CI=true) it
fails instead. Selenium is given both paths, so Selenium Manager never runs and nothing is
downloaded. The browser resolves no host but 127.0.0.1 and localhost.

The fixtures are imported into tests/conftest.py, so any test may ask for them (a test that
does is marked `browser` by tests/conftest.py; `-m browser` selects them all):

    def test_page(chrome: Chrome, tmp_path: Path) -> None:
        with serve(make_app()) as base:
            chrome.get(base + "/")
            save_screenshot(chrome, tmp_path / "page.png")
            assert console_errors(chrome) == []

Each pytest-xdist worker starts its own Chromium, with its own temporary user-data-dir, once
(`chrome_session`); `chrome` hands it to each test in one tab on about:blank, its viewport
exactly WINDOW (1280x900) at scale 1, with no cookies and an empty console log. Selenium is
blocking: run the server under test in another thread (`serve`), never in the test's own event
loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from aiohttp import web
from selenium import webdriver
from selenium.webdriver import Chrome
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.selenium_manager import SeleniumManager

# Selenium Manager stays offline and silent, should anything ever reach it.
os.environ.setdefault("SE_OFFLINE", "true")
os.environ.setdefault("SE_AVOID_STATS", "true")

CHROMIUM_ENV = "ATELIER_TEST_CHROMIUM"
CHROMEDRIVER_ENV = "ATELIER_TEST_CHROMEDRIVER"
WINDOW = (1280, 900)


def chrome_options(binary: str, user_data_dir: Path) -> webdriver.ChromeOptions:
    """Every test browser's options: headless, fixed size and scale, en-US, loopback only."""
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        "--force-device-scale-factor=1",
        "--hide-scrollbars",
        "--lang=en-US",
        f"--user-data-dir={user_data_dir}",
        # Nothing beyond loopback: every other name fails to resolve, and no proxy is used.
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1 , EXCLUDE localhost",
        "--no-proxy-server",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-default-apps",
        "--disable-extensions",
        "--disable-sync",
        "--metrics-recording-only",
        "--password-store=basic",
        "--use-mock-keychain",
    ):
        options.add_argument(argument)
    options.add_experimental_option("prefs", {"intl.accept_languages": "en-US,en"})
    # The console (errors, CSP violations) is read back through the browser log.
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # Selenium's own connection to ChromeDriver on loopback ignores HTTP(S)_PROXY. (Deprecated in
    # favour of a ClientConfig, which webdriver.Chrome does not take yet.)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        options.ignore_local_proxy_environment_variables()
    return options


def _offline_selenium_manager(*_args: Any, **_kwargs: Any) -> dict[str, str]:
    raise AssertionError("Selenium Manager must not run: the driver's path is always given")


def start_chrome(binary: str, driver: str, user_data_dir: Path) -> Chrome:
    """A new headless Chromium through the given ChromeDriver; Selenium Manager is never asked."""
    service = Service(executable_path=driver)
    with mock.patch.object(SeleniumManager, "binary_paths", _offline_selenium_manager):
        browser = webdriver.Chrome(options=chrome_options(binary, user_data_dir), service=service)
    browser.set_page_load_timeout(15)
    browser.set_script_timeout(15)
    return browser


@pytest.fixture(scope="session")
def chrome_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chrome]:
    """One Chromium per test process (per pytest-xdist worker), with its own user-data-dir.

    Skips when tests/browser.sh has not found a browser; fails instead under CI (CI=true).
    Prefer `chrome`, which cleans up between tests.
    """
    binary = os.environ.get(CHROMIUM_ENV)
    driver = os.environ.get(CHROMEDRIVER_ENV)
    if not binary or not driver:
        reason = (
            f"no browser: {CHROMIUM_ENV} and {CHROMEDRIVER_ENV} are unset"
            " (run the tests through tests/browser.sh, as `make unit` does)"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI refuses to skip the browser tests: {reason}", pytrace=False)
        pytest.skip(reason)
    browser = start_chrome(binary, driver, tmp_path_factory.mktemp("chromium-profile"))
    try:
        yield browser
    finally:
        browser.quit()


@pytest.fixture
def chrome(chrome_session: Chrome) -> Iterator[Chrome]:
    """The worker's Chromium on about:blank, its viewport WINDOW (1280x900) at scale 1, with no
    cookies and an empty console log."""
    _reset(chrome_session)
    yield chrome_session
    _reset(chrome_session)


def _reset(browser: Chrome) -> None:
    first, *others = browser.window_handles
    for handle in others:  # windows and tabs a test opened
        browser.switch_to.window(handle)
        browser.close()
    browser.switch_to.window(first)
    browser.get("about:blank")
    # The viewport itself is WINDOW, whatever room the headless window keeps for its toolbars.
    width, height = WINDOW
    metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    browser.execute_cdp_cmd("Network.clearBrowserCookies", {})  # every site's, not one page's
    browser.get_log("browser")  # reading the log empties it


def console_entries(browser: Chrome) -> list[dict[str, Any]]:
    """Everything the console logged since the last read (reading empties the log).

    Each entry is a dict with `level` (e.g. "SEVERE", "WARNING", "INFO"), `message`, `source`
    (e.g. "javascript", "network", "security") and `timestamp`.
    """
    entries: list[dict[str, Any]] = browser.get_log("browser")
    return entries


def console_errors(browser: Chrome) -> list[str]:
    """The messages of the console's errors since the last read: failed loads, uncaught
    exceptions and Content-Security-Policy violations among them. Reading empties the log."""
    return [
        str(entry["message"]) for entry in console_entries(browser) if entry["level"] == "SEVERE"
    ]


def save_screenshot(browser: Chrome, path: Path) -> Path:
    """Saves the viewport as a PNG at `path` (folders made as needed) and returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not browser.save_screenshot(str(path)):
        raise AssertionError(f"Chromium could not save a screenshot to {path}")
    return path


@contextlib.contextmanager
def serve(app: web.Application, host: str = "127.0.0.1") -> Iterator[str]:
    """Runs `app` on `host` at a free port in a thread with its own event loop; yields the base
    URL (`http://127.0.0.1:PORT`) and stops the server on exit."""
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    started = threading.Event()
    stop = asyncio.Event()
    port: list[int] = []
    failure: list[BaseException] = []

    async def run() -> None:
        await runner.setup()
        await web.TCPSite(runner, host, 0).start()
        port.append(runner.addresses[0][1])
        started.set()
        try:
            await stop.wait()
        finally:
            await runner.cleanup()

    def main() -> None:
        try:
            loop.run_until_complete(run())
        except BaseException as error:
            failure.append(error)
        finally:
            started.set()
            loop.close()

    thread = threading.Thread(target=main, name="browser-test-server", daemon=True)
    thread.start()
    if not started.wait(10) or not port:
        raise RuntimeError(f"the test server did not start: {failure}")
    try:
        yield f"http://{host}:{port[0]}"
    finally:
        if not loop.is_closed():
            loop.call_soon_threadsafe(stop.set)
        thread.join(10)
