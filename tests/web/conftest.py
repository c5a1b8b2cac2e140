"""A real headless Chromium (Debian's /usr/bin/chromium) driven by Playwright.

Playwright only drives the system browser here: its own browser downloads are never
used (`playwright install` is not needed). One browser serves each test module;
each test gets a fresh context (its own storage, like a new window).
"""

import os
import shutil
from collections.abc import Callable, Iterator

import pytest

CHROMIUM = os.environ.get("SIDECAR_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "artifacts")


@pytest.fixture(scope="module")
def browser():
    # Module scope, not session: Playwright's sync API runs its own event loop in this thread
    # while it is started, and pytest-asyncio tests collected after it need the thread free.
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (drives /usr/bin/chromium)")
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def open_page(browser) -> Iterator[Callable]:
    """open_page(url, width=1280, height=800) -> a page (in a fresh context) whose tail is connected.

    Uncaught JavaScript errors fail the test."""
    contexts = []
    errors: list[str] = []

    def open_(url: str, *, width: int = 1280, height: int = 800, wait: str | None = "connected"):
        context = browser.new_context(viewport={"width": width, "height": height})
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(url)
        if wait:
            page.wait_for_selector(f'#conn[data-state="{wait}"]')
        return page

    yield open_
    for context in contexts:
        context.close()
    assert not errors, errors


@pytest.fixture
def artifacts() -> str:
    os.makedirs(ARTIFACTS, exist_ok=True)
    return ARTIFACTS
