"""The demo in a real browser: headless Debian chromium driven by Playwright (no browser downloads).

Skipped only when /usr/bin/chromium is missing and ``MFMJT_REQUIRE_BROWSER`` is unset (CI sets it).
``MFMJT_SCREENSHOT_MODEL=default MFMJT_SCREENSHOT=docs/screenshot.png`` runs it on a real model
(on an example clip) and keeps the screenshot there; by default it uses the small random stack.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import served, write_clip
from stacks import small_random_pipeline

# Gradio's queue trips pandas deprecation warnings in its own code
pytestmark = [
    pytest.mark.filterwarnings("ignore:.*no_silent_downcasting"),
    pytest.mark.filterwarnings("ignore:The copy keyword is deprecated"),
]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
REPO = Path(__file__).resolve().parent.parent
SCREENSHOT = os.environ.get("MFMJT_SCREENSHOT")
MODEL = os.environ.get("MFMJT_SCREENSHOT_MODEL")

if not CHROMIUM.exists() and not os.environ.get("MFMJT_REQUIRE_BROWSER"):
    pytest.skip("no /usr/bin/chromium (set MFMJT_REQUIRE_BROWSER=1 to fail instead)", allow_module_level=True)

from playwright.sync_api import sync_playwright  # noqa: E402

os.environ.setdefault("MFMJT_APP_BUILD", "0")
sys.path.insert(0, str(REPO))
import app  # noqa: E402


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    if MODEL:
        from mfmjt.pipeline import load_pipeline

        loaders = {MODEL: lambda: load_pipeline(MODEL, max_duration=8.0)}
    else:
        loaders = {"random": lambda: small_random_pipeline(max_duration=3.0)}
    demo = app.build_demo(loaders)
    with served(demo, **app.LAUNCH_KWARGS) as address:
        yield address


@pytest.mark.browser
def test_upload_generate_and_play_both_guidances_then_remix_live(url, tmp_path):
    examples = sorted((REPO / "mfmjt" / "assets" / "examples").glob("*.mp4"))
    clip = examples[0] if MODEL and examples else write_clip(tmp_path / "square.mp4", 2.0)
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            # not "networkidle": offline, the page's web fonts never finish loading
            page.goto(url, wait_until="domcontentloaded", timeout=60_000)
            page.locator("#v2a-generate").wait_for(timeout=60_000)
            page.locator("#v2a-input input[type=file]").set_input_files(str(clip))
            page.locator("#v2a-input video").wait_for(timeout=30_000)  # the upload is shown
            page.locator("#v2a-generate").click()
            info = page.locator("#v2a-info")
            info.get_by_text("RTF").wait_for(timeout=60_000)
            players = [page.locator(f"#v2a-{mode} video") for mode in ("standard", "scaled")]
            sources = [player.get_attribute("src") for player in players]
            assert all(src and ".mp4" in src for src in sources), sources
            assert page.locator(".toast-body.error").count() == 0
            # the spectrograms of both results follow the players
            page.locator("#v2a-picture img").wait_for(timeout=30_000)
            page.wait_for_timeout(500)  # let the players draw their first frame
            page.screenshot(path=str(tmp_path / "screenshot.png"), full_page=True)

            # live remix: picking one guidance hides the other player ...
            page.locator("#v2a-guidance").get_by_text("scaled", exact=True).click()
            info.get_by_text("live remix").wait_for(timeout=30_000)
            page.locator("#v2a-standard").wait_for(state="hidden", timeout=10_000)
            # ... and releasing the ω slider (dragged from 1.5 to about 4.5) re-mixes again
            track = page.locator("#v2a-cfg input[type=range]").bounding_box()
            assert track is not None
            y = track["y"] + track["height"] / 2
            page.mouse.move(track["x"] + 0.15 * track["width"], y)
            page.mouse.down()
            page.mouse.move(track["x"] + 0.45 * track["width"], y, steps=5)
            page.mouse.up()
            info.get_by_text("ω = 1.5").wait_for(state="detached", timeout=30_000)
            assert "live remix" in info.inner_text()
            assert page.locator(".toast-body.error").count() == 0
        finally:
            browser.close()
    if SCREENSHOT:
        Path(SCREENSHOT).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tmp_path / "screenshot.png", SCREENSHOT)
    assert errors == []
