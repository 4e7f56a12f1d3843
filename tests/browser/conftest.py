"""Browser tests: the dashboard served by uvicorn on a loopback port, driven by Selenium in
headless Debian Chromium (``apt-get install -y chromium chromium-driver``). Without them, these
tests are skipped with a message saying so."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pypgflow.app import App

CHROMIUM = os.environ.get("PYPGFLOW_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("PYPGFLOW_CHROMEDRIVER", "/usr/bin/chromedriver")
TOKEN = "browser-token"
#: where the pages' screenshots go: a temporary folder, or docs/screenshots with
#: `make screenshots` (PYPGFLOW_SCREENSHOTS=docs/screenshots), which the docs show
SCREENSHOTS = Path(
    os.environ.get("PYPGFLOW_SCREENSHOTS") or Path(tempfile.gettempdir()) / "pypgflow-screenshots"
)


def _missing() -> str | None:
    for path in (CHROMIUM, CHROMEDRIVER):
        if not (os.path.exists(path) or shutil.which(path)):
            return (
                f"no {path}: the browser tests need Debian's Chromium and its driver "
                "(apt-get update && apt-get install -y chromium chromium-driver), or "
                "PYPGFLOW_CHROMIUM / PYPGFLOW_CHROMEDRIVER naming them"
            )
    return None


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    reason = _missing()
    if reason:
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,900",
        "--force-device-scale-factor=1",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Served:
    """The dashboard of ``app`` on a loopback port, logged in in the browser."""

    def __init__(self, app: App, browser: Any, port: int) -> None:
        self.app = app
        self.browser = browser
        self.base = f"http://127.0.0.1:{port}"

    def open(self, path: str) -> None:
        self.browser.get(self.base + path)

    def screenshot(self, name: str) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        assert self.browser.save_screenshot(str(SCREENSHOTS / f"{name}.png")), name


@pytest.fixture
def served(browser: Any, pg_url: str) -> Iterator[Served]:
    import uvicorn

    from pypgflow.dashboard import create_app
    from tests.browser.flows import create_app as flows_app

    app = flows_app(pg_url)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(app, token=TOKEN), host="127.0.0.1", port=port, log_level="warning"
        )
    )
    thread = threading.Thread(target=server.run, name="dashboard", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the dashboard did not start"
        time.sleep(0.05)
    site = Served(app, browser, port)
    browser.delete_all_cookies()
    site.open(f"/login?token={TOKEN}")
    try:
        yield site
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        app.close()
