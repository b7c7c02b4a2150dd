"""Fixtures for the browser tests: Debian's headless Chromium driven through its own
chromedriver (Selenium never downloads anything), the real portal as a child process
(``tests.portalkit``), and a folder that keeps a screenshot of every step.

The folder is ``$SMGW_SCREENSHOTS`` when set, else a pytest temporary directory; either way
it is printed in the terminal summary. Nothing is written into the repository.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests import portalkit
from tests.tools import missing

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
_FOLDERS: list[Path] = []


def need_browser() -> None:
    """Chromium, chromedriver and selenium, or ``missing`` (a skip locally, a failure under CI=true)."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing("chromium (the selenium package: pip install 'selenium>=4.20,<5')")
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            missing(f"chromium ({path}: apt-get install chromium chromium-driver)")


def open_browser(downloads: Path) -> WebDriver:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--ignore-certificate-errors",
                "--window-size=1280,1000", "--lang=en-US", "--no-first-run", "--disable-extensions",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"):
        options.add_argument(arg)
    options.add_experimental_option("prefs", {
        "download.default_directory": str(downloads), "download.prompt_for_download": False,
        "download.directory_upgrade": True, "safebrowsing.enabled": False,
        "intl.accept_languages": "en-US,en"})
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(20)
    # headless Chromium honours the prefs above; this makes sure of it for the page target too
    driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    return driver


class Shots:
    """``shots(driver, "login")`` saves ``NN-login.png``, numbered in the order of the steps."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.count = 0

    def __call__(self, driver: WebDriver, step: str) -> Path:
        self.count += 1
        path = self.folder / f"{self.count:02d}-{step}.png"
        assert driver.save_screenshot(str(path)), f"the browser gave no screenshot for {step}"
        assert path.stat().st_size > 1000, f"{path}: an empty screenshot"
        return path


@pytest.fixture(scope="session")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Shots:
    chosen = os.environ.get("SMGW_SCREENSHOTS")
    folder = Path(chosen) if chosen else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("[0-9][0-9]-*.png"):  # only our own numbered files, so a rerun does not mix runs
        old.unlink()
    print(f"browser screenshots: {folder}")
    _FOLDERS.append(folder)
    return Shots(folder)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """A failed test leaves a screenshot of what its browser showed (before the browser quits)."""
    outcome = yield
    report = outcome.get_result()
    funcargs = getattr(item, "funcargs", {})
    shots = funcargs.get("shots")
    if report.when != "call" or not report.failed or not isinstance(shots, Shots):
        return
    for name in ("alice", "browser", "fresh_browser"):
        if funcargs.get(name) is not None:
            try:
                path = shots(funcargs[name], "FAILED-" + re.sub(r"[^A-Za-z0-9_-]+", "-", item.name))
            except Exception as exc:  # noqa: BLE001 - the test's own failure is what matters
                report.sections.append(("screenshot", f"none: {exc}"))
            else:
                report.sections.append(("screenshot", str(path)))
            return


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for folder in _FOLDERS:
        shots = sorted(p.name for p in folder.glob("[0-9][0-9]-*.png"))
        terminalreporter.write_line(f"browser screenshots ({len(shots)}): {folder}")


@pytest.fixture(scope="module")
def downloads(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="module")
def browser(downloads: Path) -> Iterator[WebDriver]:
    """One browser for the module: the household's session lives on from test to test."""
    need_browser()
    driver = open_browser(downloads)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def fresh_browser(tmp_path: Path) -> Iterator[WebDriver]:
    """A browser of its own: no cookies, no session."""
    need_browser()
    driver = open_browser(tmp_path / "downloads")
    try:
        yield driver
    finally:
        driver.quit()


@dataclass
class Portal:
    url: str
    root: Path
    settings: dict[str, Any]
    running: portalkit.Running
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def store(self) -> Path:
        return Path(self.settings["store"])


@contextmanager
def running_portal(root: Path, days: int = 9, max_streams: int = 2) -> Iterator[Portal]:
    """A store with ``days`` of alice's and bob's history and the real server on a free port."""
    root.mkdir(parents=True, exist_ok=True)
    settings = portalkit.build(root, days=days, port=portalkit.free_port(), max_streams=max_streams)
    running = portalkit.start(settings)
    try:
        yield Portal(running.url, root, json.loads(settings.read_text()), running)
    finally:
        running.stop()
        if running.process.returncode != 0:
            warnings.warn(f"the portal did not exit cleanly on SIGTERM (exit {running.process.returncode}): "
                          f"an open live stream keeps cheroot's worker thread; log {running.log}", stacklevel=1)
