"""Browser tests: the real app in its own process, driven by Playwright in Debian's Chromium."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.app_server import ROOT, AppServer

ARTIFACTS = Path(os.environ.get("MELANGE_TEST_ARTIFACTS", ROOT / "test-artifacts"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-gpu",
    "--disable-dev-shm-usage",
]


@pytest.fixture(scope="session")
def real_app(tmp_path_factory) -> Iterator[AppServer]:
    """The app with the real embedded models on CPU, as a user starts it."""
    server = AppServer(tmp_path_factory.mktemp("melange-data"), "--device", "cpu")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def playwright():
    """One Playwright for the session: its sync API cannot be started twice in one thread."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        yield p


def launch_chromium(playwright, *extra_args: str):
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    assert executable, "Debian's chromium must be installed (make system-deps)"
    return playwright.chromium.launch(executable_path=executable, headless=True, args=[*CHROMIUM_ARGS, *extra_args])


@pytest.fixture(scope="session")
def browser(playwright):
    browser = launch_chromium(playwright)
    yield browser
    browser.close()


@contextmanager
def screenshot_page(browser, name: str, **context_options) -> Iterator:
    """A fresh page; its screenshot is kept in ARTIFACTS under the test's name when the test is done."""
    context = browser.new_context(viewport={"width": 1280, "height": 1000}, **context_options)
    page = context.new_page()
    page.set_default_timeout(60_000)
    try:
        yield page
    finally:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
        context.close()


@pytest.fixture
def page(browser, request):
    with screenshot_page(browser, request.node.name) as page:
        yield page
