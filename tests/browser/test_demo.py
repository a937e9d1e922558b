"""The live demo (apps/demo) in headless Chromium: upload, Predict, a playing result;
two sessions at once get their own outputs; a bad upload gets a message in the page;
two clicks on the boundary frame make a pin that the result reports."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from trajloom.data.synthetic import SceneConfig, make_scene
from trajloom.data.video import write_video
from trajloom_demo.pinning import click_to_pixel, display_scale

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
WINDOW = ["--width", "128", "--height", "96", "--stride", "16", "--history", "16", "--future", "16"]
START_TIMEOUT = 240.0  # seconds; the demo itself is up in seconds on an idle machine


def serve_demo(folder: Path, *args: str) -> Iterator[str]:
    """apps/demo on 127.0.0.1 (a free port) with ``args``, outputs under ``folder/out``;
    yields its address and stops it afterwards (a generator for fixtures)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = (folder / "demo.log").open("w")
    command = [sys.executable, str(ROOT / "apps" / "demo"), "--port", str(port), *args]
    command += ["--out", str(folder / "out")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/"
    try:
        end = time.monotonic() + START_TIMEOUT
        while True:
            if proc.poll() is not None:
                pytest.fail(
                    f"the demo exited ({proc.returncode}): {(folder / 'demo.log').read_text()}"
                )
            try:
                urllib.request.urlopen(url, timeout=5).close()
                break
            except OSError:
                if time.monotonic() > end:
                    pytest.fail(f"the demo did not come up in {START_TIMEOUT} s")
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


@pytest.fixture(scope="module")
def demo_url(tmp_path_factory) -> Iterator[str]:
    """apps/demo offering the baselines only, on a 128x96 window of 16 + 16 frames."""
    folder = tmp_path_factory.mktemp("demo")
    none = str(folder / "none")
    yield from serve_demo(folder, *WINDOW, "--runs", none, "--examples", none)


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    """Two 32-frame synthetic videos (long enough for a ground truth) and an 8-frame one."""
    folder = tmp_path_factory.mktemp("videos")
    cfg = SceneConfig(width=128, height=96, stride=16, num_frames=32)
    made = {f"scene{s}": make_scene(s, cfg).frames for s in (1, 2)}
    made["short"] = make_scene(3, cfg).frames[:8]
    return {
        name: write_video(folder / f"{name}.mp4", frames, fps=8) for name, frames in made.items()
    }


def _wait(driver, script: str, timeout: float = 120.0):
    """Poll a JS expression until it is truthy; returns its value."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = driver.execute_script(f"return ({script});")
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {script}")


def _upload_and_predict(driver, url: str, video: Path) -> None:
    from selenium.webdriver.common.by import By

    driver.get(url)
    _wait(driver, "document.querySelector('#predict')", timeout=60)
    driver.find_element(By.CSS_SELECTOR, "#input-video input[type=file]").send_keys(str(video))
    _wait(driver, "document.querySelector('#input-video video')", timeout=60)  # uploaded
    driver.find_element(By.CSS_SELECTOR, "#predict").click()


# The result video has loaded its metadata: [src, readyState, duration].
RESULT = (
    "(v => v && v.readyState >= 1 && v.duration > 0 && [v.src, v.readyState, v.duration])"
    "(document.querySelector('#overlay video'))"
)


def test_demo_predicts_two_sessions_apart(browser, demo_url, videos, console_errors, screenshot):
    from selenium.webdriver.common.by import By

    # two sessions (tabs), each with its own video, both pressed before either finishes
    first = browser.current_window_handle
    _upload_and_predict(browser, demo_url, videos["scene1"])
    browser.switch_to.new_window("tab")
    second = browser.current_window_handle
    _upload_and_predict(browser, demo_url, videos["scene2"])
    results = {}
    for name, tab in (("scene2", second), ("scene1", first)):
        browser.switch_to.window(tab)
        src, _ready, duration = _wait(browser, RESULT)
        assert duration == pytest.approx(32 / 8, abs=0.3)  # 16 + 16 frames at 8 fps
        summary = browser.find_element(By.CSS_SELECTOR, "#summary").text
        results[name] = (src, summary)
    for name, other in (("scene1", "scene2"), ("scene2", "scene1")):
        src, summary = results[name]
        assert src.endswith(f"/{name}.mp4") and f"-{name}" in summary and other not in summary
    # the grid of the 4 samples and the truth are there too, and the result plays
    browser.switch_to.window(first)
    assert _wait(browser, RESULT.replace("#overlay", "#truth"))
    assert _wait(browser, RESULT.replace("#overlay", "#grid"))
    browser.execute_script("document.querySelector('#overlay video').play()")
    _wait(browser, "document.querySelector('#overlay video').currentTime > 0", timeout=30)
    browser.execute_script("document.querySelector('#overlay').scrollIntoView()")
    screenshot("demo")
    assert console_errors() == []


def test_demo_explains_a_too_short_video(browser, demo_url, videos, screenshot):
    _upload_and_predict(browser, demo_url, videos["short"])
    text = _wait(
        browser,
        "Array.from(document.querySelectorAll('.toast-body, .toast-text, [data-testid=\"toast-body\"]'))"
        ".map(e => e.textContent).join(' ')",
    )
    assert "too short: 8 frames" in text and "16 frames of history" in text
    assert "Traceback" not in browser.page_source
    screenshot("demo-error")


# --------------------------------------------------------------------------- click-to-pin
@pytest.fixture(scope="module")
def trained_demo(tmp_path_factory, pinnable_trained_set) -> Iterator[tuple[str, Path]]:
    """apps/demo offering a tiny trained set that follows pins first (128x96, stride 16,
    9 + 9 frames); yields its address and its output folder."""
    folder = tmp_path_factory.mktemp("pin-demo")
    none = str(folder / "none")
    args = ["--checkpoint", str(pinnable_trained_set), "--runs", none, "--examples", none]
    for url in serve_demo(folder, *args):
        yield url, folder / "out"


# Where Gradio's image click handler sees each click: offset in the image, its on-screen
# size and its natural size (recorded before Gradio's own handler runs).
RECORD_CLICKS = """
window.pinClicks = [];
document.querySelector('#boundary').addEventListener('click', e => {
  const img = document.querySelector('#boundary img');
  const r = img.getBoundingClientRect();
  window.pinClicks.push([e.clientX - r.left, e.clientY - r.top, r.width, r.height,
                         img.naturalWidth, img.naturalHeight]);
}, true);
"""


def _gradio_index(x: float, y: float, w: float, h: float, nw: int, nh: int) -> tuple[int, int]:
    """Gradio 6's click index on an image (its ImagePreview): the offset divided by the
    on-screen zoom (the image is fitted, centred, never enlarged), Math.round-ed."""
    r = min(w / nw, h / nh, 1.0)
    dx, dy = (w - nw * r) / 2, (h - nh * r) / 2
    return int(((x - dx) / r + 0.5) // 1), int(((y - dy) / r + 0.5) // 1)


def _click_at(driver, xy: tuple[float, float], scale: int) -> None:
    """A real click on the boundary image over working pixel ``xy``."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    img = driver.find_element(By.CSS_SELECTOR, "#boundary img")
    w, h, nw, nh = driver.execute_script(
        "const i = arguments[0], r = i.getBoundingClientRect();"
        "return [r.width, r.height, i.naturalWidth, i.naturalHeight];",
        img,
    )
    r = min(w / nw, h / nh, 1.0)
    u, v = (xy[0] + 0.5) * scale, (xy[1] + 0.5) * scale  # displayed-image pixels
    dx = (w - nw * r) / 2 + u * r - w / 2  # selenium: offsets from the element's centre
    dy = (h - nh * r) / 2 + v * r - h / 2
    ActionChains(driver).move_to_element_with_offset(img, round(dx), round(dy)).click().perform()


def test_demo_click_to_pin(browser, trained_demo, console_errors, screenshot):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    url, out = trained_demo
    cfg = SceneConfig(width=128, height=96, stride=16, num_frames=18)
    scene = make_scene(4, cfg)
    video = write_video(out.parent / "walk.mp4", scene.frames, fps=8)
    # a grid point seen at the boundary frame (8), near the middle; click 2 px off it
    seen = scene.visibility[8]
    gap = np.where(seen, np.linalg.norm(scene.tracks[8] - [64, 48], axis=-1), np.inf)
    source = tuple(scene.tracks[8, int(np.argmin(gap))] + 2.0)
    target = (min(source[0] + 20.0, 120.0), max(source[1] - 12.0, 4.0))
    browser.get(url)
    _wait(browser, "document.querySelector('#predict')", timeout=60)
    browser.find_element(By.CSS_SELECTOR, "#input-video input[type=file]").send_keys(str(video))
    _wait(browser, "(i => i && i.naturalWidth > 0)(document.querySelector('#boundary img'))")
    frame = browser.find_element(By.CSS_SELECTOR, "#pin-frame input[type=number]")
    frame.send_keys(Keys.CONTROL, "a")
    frame.send_keys("5", Keys.TAB)
    browser.execute_script(RECORD_CLICKS)
    scale = display_scale(128)
    _click_at(browser, source, scale)
    _wait(browser, "document.querySelector('#pin-note').textContent.includes('picked')")
    _click_at(browser, target, scale)
    clicks = _wait(browser, "window.pinClicks.length == 2 && window.pinClicks")
    # the pin the page made is exactly the mapping of where the browser clicked
    want = [click_to_pixel(_gradio_index(*c), scale, (128, 96)) for c in clicks]
    cells = [f"({x:g}, {y:g})" for x, y in want]
    table = f"document.querySelector('#pins').innerText.includes('{cells[1]}')"
    _wait(browser, table, timeout=30)
    assert cells[0] in browser.find_element(By.CSS_SELECTOR, "#pins").text
    for (x, y), aim in zip(want, (source, target), strict=True):
        assert abs(x - aim[0]) <= 1.0 and abs(y - aim[1]) <= 1.0
    browser.find_element(By.CSS_SELECTOR, "#predict").click()
    _wait(browser, RESULT, timeout=240)
    summary = browser.find_element(By.CSS_SELECTOR, "#summary").text
    assert "pin error (px)" in summary and "1 pin(s)" in summary
    (archive,) = out.glob("*.zip")
    with zipfile.ZipFile(archive) as z:
        record = json.loads(z.read("pins.json"))
    (clicked,) = record["clicked"]
    assert clicked["frames"] == [5] and clicked["source"] == list(want[0])
    assert clicked["targets"] == [list(want[1])] and len(record["error_px"]) == 4
    # the whole page (docs/demo.png): the overlay paused at the pinned frame (5 of the
    # future: video frame 9 + 5 at 8 fps), the pin on the boundary frame, the tables
    browser.set_window_size(1280, 1900)
    browser.execute_script(
        "const v = document.querySelector('#overlay video'); v.pause(); v.currentTime = 14 / 8;"
        "window.scrollTo(0, 0);"
    )
    _wait(browser, "document.querySelector('#overlay video').readyState >= 2", timeout=30)
    screenshot("demo-pins")
    assert console_errors() == []
