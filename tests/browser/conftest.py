"""Pages in a real browser: Debian's `chromium` driven by Playwright (from PyPI), pointed at
that binary; nothing is downloaded. A phone-sized page (360x740), axe-core on every page
(zero serious or critical findings), and a screenshot of each page under var/screenshots."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import stack_factory  # noqa: F401  (the stack the pages are served by)

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "var" / "screenshots"
CHROMIUM = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"
PHONE = {"width": 360, "height": 740}
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--disable-default-apps", "--disable-sync", "--no-first-run",
                 "--metrics-recording-only", "--disable-extensions"]



# Module scope: Playwright's sync API runs an event loop in this thread while it is open,
# and the async tests after the browser tests need the thread's loop free again.
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: apt-get install chromium (.ci/run does)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def phone(browser: Any) -> Iterator[Any]:
    """A fresh phone-sized browser context (its own cookies): a page in it."""
    context = browser.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True,
                                  locale="id-ID")
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture
def new_phone(browser: Any) -> Iterator[Any]:
    """Another person's phone: call it for each new context."""
    contexts: list[Any] = []

    def make() -> Any:
        context = browser.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True,
                                      locale="id-ID")
        contexts.append(context)
        return context.new_page()

    yield make
    for c in contexts:
        c.close()


def check_accessibility(page: Any) -> None:
    """axe-core (shipped inside the axe-playwright-python wheel) on the page as it is now:
    no serious or critical violation of WCAG 2.1 A/AA."""
    from axe_playwright_python.sync_playwright import Axe

    results = Axe().run(page, options={"runOnly": {"type": "tag", "values": ["wcag2a", "wcag2aa", "wcag21a",
                                                                                "wcag21aa"]}})
    bad = [v for v in results.response["violations"] if v.get("impact") in ("serious", "critical")]
    assert not bad, "\n".join(f"{v['id']} ({v['impact']}): {v['help']} at "
                              f"{[n['target'] for n in v['nodes']][:3]}" for v in bad)


def screenshot(page: Any, name: str) -> Path:
    """Keep what the person saw under var/screenshots/<name>.png (full page)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / (re.sub(r"[^a-z0-9_-]+", "-", name.lower()) + ".png")
    page.screenshot(path=str(path), full_page=True)
    return path


def seen(page: Any, name: str) -> None:
    """Every page a test visits: axe-core, then a screenshot."""
    check_accessibility(page)
    screenshot(page, name)
