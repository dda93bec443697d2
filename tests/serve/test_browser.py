"""The page in a real browser: headless Chromium (Debian's `chromium`) driven by Playwright against the system
browser. Loads the page of a tiny run, samples 4 images, opens variations, draws a mask and inpaints.

Skipped, with the reason, when Chromium or Playwright is missing. VCDM_SCREENSHOTS=DIR keeps the screenshots
(docs/serve/ holds the ones the README shows); by default they go to a temporary folder. VCDM_SERVE_RUN=RUN serves
that trained run instead of the tiny one (docs/serve's screenshots: the MNIST demo run).
"""

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser"))), None)
try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:
    sync_playwright = None
uvicorn = pytest.importorskip("uvicorn")

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or sync_playwright is None,
    reason="the browser test needs Chromium (apt-get install chromium) and Playwright (pip install playwright)",
)


@pytest.fixture(scope="module")
def url(request):
    from vcdm.serve import create_app

    given = os.environ.get("VCDM_SERVE_RUN")
    mnist_run = Path(given) if given else request.getfixturevalue("mnist_run")

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app([mnist_run]), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    end = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < end and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/"
    server.should_exit = True
    thread.join(timeout=30)


def test_sample_variations_and_inpaint_in_chromium(url, tmp_path):
    given = os.environ.get("VCDM_SERVE_RUN") and (Path(os.environ["VCDM_SERVE_RUN"]) / "palette").is_dir()
    shots = Path(os.environ.get("VCDM_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url)
        expect(page.locator("#run option")).to_have_count(1)
        expect(page.locator("#run-summary")).to_contain_text("1x28x28")
        for field, value in (
            ("#num", "4"),
            ("#num_steps", "6"),
            ("#prior_num_steps", "6"),
            ("#edit-steps", "6"),
        ):
            page.fill(field, value)
        page.select_option("#sampler", "euler")
        page.click("#sample-btn")
        cards = page.locator("#gallery .card")
        expect(cards).to_have_count(4, timeout=60_000)
        expect(page.locator("#message")).to_contain_text("sample: 4 image(s)")
        assert "preview.png" in (page.get_attribute("#preview", "src") or "")
        assert all(cards.nth(i).locator("img").evaluate("i => i.naturalWidth") == 28 for i in range(4))
        page.screenshot(path=str(shots / "sample.png"))

        # a PNG the page served fills the form in (the drop zone's path, through its file input)
        third = tmp_path / "third.png"
        third.write_bytes(
            page.request.get(url + cards.nth(2).locator("img").get_attribute("src").lstrip("/")).body()
        )
        page.fill("#seed", "77")
        page.set_input_files("#from-png", str(third))
        expect(page.locator("#message")).to_contain_text("form filled from third.png")
        assert (page.input_value("#seed"), page.input_value("#num"), page.input_value("#num_steps")) == (
            "1",
            "1",
            "6",
        )

        cards.nth(0).locator("button[data-op=variations]").click()
        expect(cards).to_have_count(8, timeout=60_000)
        expect(cards.nth(0).locator(".params")).to_contain_text("edit=variations")
        page.screenshot(path=str(shots / "variations.png"))

        cards.nth(0).locator("button[data-op=inpaint]").click()
        canvas = page.locator("#mask-canvas")
        expect(canvas).to_be_visible()
        box = canvas.bounding_box()
        page.mouse.move(box["x"] + 40, box["y"] + 60)
        page.mouse.down()
        for x in range(40, 220, 20):
            page.mouse.move(box["x"] + x, box["y"] + 60 + x / 3)
        page.mouse.up()
        page.screenshot(path=str(shots / "mask.png"))
        page.click("#inpaint-btn")
        expect(cards).to_have_count(12, timeout=60_000)
        # RePaint on the tiny run (no Palette model); a run with one inpaints with it
        expect(cards.nth(0).locator(".params")).to_contain_text("edit=inpaint")
        expect(cards.nth(0).locator(".params")).to_contain_text(
            "method=palette" if given else "method=repaint"
        )
        page.screenshot(path=str(shots / "inpaint.png"), full_page=True)
        browser.close()
    assert not errors, errors
