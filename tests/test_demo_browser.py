"""Real-browser tests of the demo: Debian's chromium, driven by Playwright, uploads a photo, and
streams a fake webcam (a .y4m clip made here from demo/examples/astronaut.jpg) into the Live tab.

Playwright's own browser download does not work offline, so this uses the system chromium
(``apt-get install -y chromium``); without it, or without the ``playwright`` package, the test
is skipped with the reason.
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import sys

import numpy as np
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


def write_y4m(path: pathlib.Path, frames: int = 30, size: tuple[int, int] = (640, 480)) -> pathlib.Path:
    """A Y4M clip (what Chromium's fake camera plays, in a loop): the astronaut on a grey 640x480
    canvas, drifting a few pixels. Written by hand: the header, then per frame ``FRAME`` and the
    Y, U and V planes (4:2:0, as OpenCV's I420 conversion lays them out)."""
    import cv2

    width, height = size
    photo = cv2.resize(cv2.imread(str(EXAMPLES / "astronaut.jpg")), (360, 360), interpolation=cv2.INTER_AREA)
    with open(path, "wb") as stream:
        stream.write(f"YUV4MPEG2 W{width} H{height} F10:1 Ip A1:1 C420jpeg\n".encode("ascii"))
        for index in range(frames):
            canvas = np.full((height, width, 3), 90, np.uint8)
            x = (width - 360) // 2 + int(round(20 * np.sin(index / 5)))
            y = (height - 360) // 2
            canvas[y:y + 360, x:x + 360] = photo
            stream.write(b"FRAME\n")
            stream.write(cv2.cvtColor(canvas, cv2.COLOR_BGR2YUV_I420).tobytes())
    return path


def test_browser_live_tab_labels_the_fake_webcam(tmp_path):
    url = running_app()
    clip = write_y4m(tmp_path / "astronaut.y4m")
    camera = ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
              f"--use-file-for-fake-video-capture={clip}"]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS + camera, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1400})
            page.goto(url, wait_until="load", timeout=60_000)
            page.get_by_role("tab", name="Live", exact=True).click()
            webcam = page.locator("#live-webcam")
            webcam.get_by_text("Click to Access Webcam").click(timeout=30_000)
            webcam.locator("button", has_text="Record").click(timeout=30_000)  # starts the stream
            page.wait_for_function(
                "() => /[1-9][0-9]* faces? in view/.test(document.querySelector('#live-status')?.innerText || '')",
                timeout=60_000,
            )
            page.wait_for_function("() => /frames\\/s \\(last/.test(document.querySelector('#live-status').innerText)",
                                   timeout=30_000)
            status = page.locator("#live-status").inner_text()
            src = page.locator("#live-output img").first.get_attribute("src")
            page.screenshot(path=str(tmp_path / "live.png"), full_page=True)
            webcam.locator("button", has_text="Stop").click(timeout=10_000)
        finally:
            browser.close()

    assert re.search(r"\b1 face in view", status), status
    assert "MTCNN" in status and "every 4th frame" in status
    fps = float(re.search(r"([0-9.]+) frames/s", status).group(1))
    assert fps > 0, status
    assert src and src.startswith("data:image/jpeg;base64,")  # the labelled frame, sent inline
    if os.environ.get("FER_DEMO_SCREENSHOT"):
        shutil.copy(tmp_path / "live.png", pathlib.Path(os.environ["FER_DEMO_SCREENSHOT"]).with_suffix(".live.png"))


def test_browser_refused_photo_keeps_its_reason_on_the_page(tmp_path):
    """A truncated JPEG and a text file named .jpg: after Gradio's 10 s toast time the reason is still in
    the face note, readable (no error badge over it), and /compare on the same file is still an AppError."""
    import time

    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    url = running_app()
    jpeg = (EXAMPLES / "astronaut.jpg").read_bytes()
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(jpeg[: len(jpeg) // 3])
    text_file = tmp_path / "notes.jpg"
    text_file.write_text("a text file with a photo's name\n" * 20)
    cases = {truncated: "truncated or damaged", text_file: "not an image we can read"}
    covered_js = """() => {
        const note = document.querySelector('#face-note');
        const box = note.getBoundingClientRect();
        const overlaps = [...document.querySelectorAll('[class*="error"]')].filter((el) => {
            const r = el.getBoundingClientRect();
            return r.width > 0 && r.height > 0 && getComputedStyle(el).visibility !== 'hidden' &&
                r.left < box.right && r.right > box.left && r.top < box.bottom && r.bottom > box.top;
        }).map((el) => el.className);
        const p = note.querySelector('p') || note;
        const t = p.getBoundingClientRect();
        const top = document.elementFromPoint(t.left + Math.min(20, t.width / 2), t.top + t.height / 2);
        return {overlaps, onTop: !!top && note.contains(top), text: note.innerText};
    }"""
    seen = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            pages = {}
            for path, reason in cases.items():
                page = browser.new_page(viewport={"width": 1400, "height": 1200})
                page.goto(url, wait_until="load", timeout=60_000)
                page.wait_for_selector("input[type=file]", state="attached", timeout=60_000)
                page.locator("input[type=file]").first.set_input_files(str(path))
                page.wait_for_function("(r) => (document.querySelector('#face-note')?.innerText || '').includes(r)",
                                       arg=reason, timeout=90_000)
                pages[path] = page
            time.sleep(11)  # past Gradio's 10 s toast
            for path, page in pages.items():
                page.wait_for_function("() => document.querySelectorAll('.toast-body').length === 0", timeout=30_000)
                seen[path] = (page.locator("#face-note").inner_text(), page.locator("#face-note").is_visible(),
                              page.evaluate(covered_js), page.inner_text("body"))
                page.screenshot(path=str(tmp_path / f"refused-{path.stem}.png"), full_page=True)
        finally:
            browser.close()

    client = Client(url, verbose=False, download_files=False, ssl_verify=False)
    for path, reason in cases.items():
        note, visible, layout, body = seen[path]
        assert reason in body and reason in note, note
        assert note.startswith("⚠ Cannot use this image:"), note
        assert "see the message in the corner" not in body
        assert visible and layout["onTop"], layout
        assert not layout["overlaps"], layout
        with pytest.raises(AppError, match=reason):
            client.predict(handle_file(str(path)), api_name="/compare")
