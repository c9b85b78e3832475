"""One real-browser test of the demo: Debian's chromium, driven by Playwright, uploads a photo.

Playwright's own browser download does not work offline, so this uses the system chromium
(``apt-get install -y chromium``); without it, or without the ``playwright`` package, the test
is skipped with the reason.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import sys

import pytest

CHROMIUM = os.environ.get("FER_DEMO_CHROMIUM", "/usr/bin/chromium")  # Debian's package
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
    pytest.skip(f"{CHROMIUM} is absent: install it with `apt-get install -y chromium`", allow_module_level=True)
try:
    from playwright.sync_api import sync_playwright
except ImportError:
    pytest.skip("the playwright package is absent: `pip install playwright` (no browser download needed)",
                allow_module_level=True)

from test_demo import ALL_MODELS, EXAMPLES, compare, loaded_models, running_app  # noqa: E402
from synthetic import CLASS_NAMES_7  # noqa: E402


def test_browser_upload_shows_five_predictions(tmp_path):
    url = running_app()
    photo = EXAMPLES / "astronaut.jpg"
    names = {key: loaded_models().models[key].display_name for key in ALL_MODELS}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1200})
            page.goto(url, wait_until="load", timeout=60_000)
            page.wait_for_selector("input[type=file]", state="attached", timeout=60_000)
            for name in names.values():
                assert page.get_by_role("tab", name=name).count() == 1, name
            page.locator("input[type=file]").first.set_input_files(str(photo))
            for key in ALL_MODELS:
                page.wait_for_selector(f"#label-{key} [data-testid=label-output-value]", timeout=90_000)
            shown = {
                key: page.locator(f"#label-{key} [data-testid=label-output-value]").inner_text().strip()
                for key in ALL_MODELS
            }
            note = page.locator("#face-note").inner_text()
            timing = page.locator("#time-scratch_cnn").inner_text()
            page.screenshot(path=str(tmp_path / "compare.png"), full_page=True)
        finally:
            browser.close()

    assert all(label in CLASS_NAMES_7 for label in shown.values()), shown
    assert "One face found" in note
    assert "Inference:" in timing and "ms" in timing
    from gradio_client import Client

    api = compare(Client(url, verbose=False, download_files=False, ssl_verify=False), photo)[-1]["models"]
    assert shown == {key: api[key]["label"] for key in ALL_MODELS}  # the page shows what the API returns
    if os.environ.get("FER_DEMO_SCREENSHOT"):
        shutil.copy(tmp_path / "compare.png", os.environ["FER_DEMO_SCREENSHOT"])
