"""Real-browser tests of the demo: Debian's chromium, driven by Playwright, uploads a photo, and
streams a fake webcam (a .y4m clip made here from demo/examples/astronaut.jpg) into the Live tab.

Playwright's own browser download does not work offline, so this uses the system chromium
(``apt-get install -y chromium``); without it, or without the ``playwright`` package, the test
is skipped with the reason.

``test_browser_compare_tab_screenshot`` saves the Compare tab after a prediction as a PNG into pytest's
tmp dir and checks it is a real picture. With ``FER_SCREENSHOT_DIR`` set it serves the shipped models
of ``saved_models/`` instead and writes the picture, shrunk to 1000 px and 128 colours, to that folder as
``compare_tab.png``; the README's copy is refreshed with
``FER_SCREENSHOT_DIR=docs/images python -m pytest tests/test_demo_browser.py -k screenshot``.
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
    from playwright.sync_api import expect, sync_playwright
except ImportError:
    pytest.skip("the playwright package is absent: `pip install playwright` (no browser download needed)",
                allow_module_level=True)

from demo_fixtures import ALL_MODELS, EXAMPLES, ROOT, compare, free_port, loaded_models, running_app  # noqa: E402
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
            for name in names.values():  # the tabs render after the upload box: wait for each (a busy CI once missed one)
                expect(page.get_by_role("tab", name=name)).to_have_count(1, timeout=60_000)
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


SCREENSHOT_ENV = "FER_SCREENSHOT_DIR"  # set: the shipped models' Compare tab, written there as compare_tab.png
SCREENSHOT_NAME = "compare_tab.png"
SCREENSHOT_MAX_BYTES = 300_000  # the committed copy, docs/images/compare_tab.png
SCREENSHOT_PHOTO = "astronaut.jpg"


def shipped_app() -> str:
    """The app on the shipped models of saved_models/ (what the README's picture shows); its URL."""
    import atexit

    from demo.app import build_demo, launch

    blocks = build_demo(ROOT / "saved_models")
    if not blocks.fer_models:
        pytest.skip("no shipped models in saved_models/ to take the README's screenshot with")
    launch(blocks, host="127.0.0.1", port=free_port(), prevent_thread_lock=True, quiet=True, warm_up=False)
    atexit.register(blocks.close)
    return blocks.local_url


def shrink_png(source: pathlib.Path, target: pathlib.Path, width: int = 1000, colours: int = 128) -> pathlib.Path:
    """A smaller copy for the repository: at most ``width`` px wide, a ``colours``-colour palette."""
    from PIL import Image

    with Image.open(source) as image:
        image = image.convert("RGB")
        if image.width > width:
            image = image.resize((width, round(image.height * width / image.width)), Image.Resampling.LANCZOS)
        image.quantize(colors=colours, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
            target, optimize=True)
    return target


def assert_real_picture(path: pathlib.Path, min_size: tuple[int, int] = (800, 500)) -> None:
    """Not a blank or near-blank page: big enough, many colours, no colour covering almost all of it,
    and detail (edges) across the picture."""
    from PIL import Image

    assert path.stat().st_size > 20_000, path.stat().st_size
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"))
    height, width = pixels.shape[:2]
    assert width >= min_size[0] and height >= min_size[1], (width, height)
    _, counts = np.unique(pixels.reshape(-1, 3), axis=0, return_counts=True)
    assert len(counts) >= 64, f"only {len(counts)} colours"
    assert counts.max() / counts.sum() < 0.9, "one colour covers over 90 % of the picture"
    gray = pixels.mean(axis=2)
    assert gray.std() > 10, gray.std()
    rows_with_detail = (np.abs(np.diff(gray, axis=1)) > 30).any(axis=1).mean()
    assert rows_with_detail > 0.3, rows_with_detail  # text, photo and bars, not one strip of content


def test_browser_compare_tab_screenshot(tmp_path):
    """The Compare tab after a prediction on an example photo, as a PNG: the page from its title to the
    bottom of the Compare tab's row of models, every model's top-3 shown."""
    target_dir = os.environ.get(SCREENSHOT_ENV)
    url = shipped_app() if target_dir else running_app()
    photo = EXAMPLES / SCREENSHOT_PHOTO
    shot = tmp_path / SCREENSHOT_NAME
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url, wait_until="load", timeout=60_000)
            page.wait_for_selector("input[type=file]", state="attached", timeout=60_000)
            page.locator("input[type=file]").first.set_input_files(str(photo))
            cards = page.locator(".model-card")
            count = cards.count()
            assert count >= 2, count
            for index in range(count):
                cards.nth(index).locator("[data-testid=label-output-value]").wait_for(timeout=180_000)
            page.wait_for_function("() => /Inference:/.test(document.querySelector('.model-card .timing')?.innerText"
                                   " || '')", timeout=60_000)
            page.wait_for_function("() => [...document.querySelectorAll('img')].every((i) => i.complete)",
                                   timeout=30_000)
            page.wait_for_timeout(500)  # let the bars finish their transition
            bottom = page.evaluate("() => Math.max(...[...document.querySelectorAll('.model-card')]"
                                   ".map((c) => c.getBoundingClientRect().bottom + window.scrollY))")
            page.screenshot(path=str(shot), full_page=True,
                            clip={"x": 0, "y": 0, "width": 1400, "height": int(bottom) + 24})
            labels = [cards.nth(i).locator("[data-testid=label-output-value]").inner_text().strip()
                      for i in range(count)]
        finally:
            browser.close()

    assert all(labels), labels
    assert_real_picture(shot)
    if target_dir:
        committed = shrink_png(shot, pathlib.Path(target_dir) / SCREENSHOT_NAME)
        assert committed.stat().st_size < SCREENSHOT_MAX_BYTES, committed.stat().st_size
        assert_real_picture(committed)

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
