"""The live demo (apps/demo) in headless Chromium: upload, Predict, a playing result;
two sessions at once get their own outputs; a bad upload gets a message in the page."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from trajloom.data.synthetic import SceneConfig, make_scene
from trajloom.data.video import write_video

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
WINDOW = ["--width", "128", "--height", "96", "--stride", "16", "--history", "16", "--future", "16"]
START_TIMEOUT = 240.0  # seconds; the demo itself is up in seconds on an idle machine


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def demo_url(tmp_path_factory) -> Iterator[str]:
    """apps/demo on 127.0.0.1 (a free port), baselines on a 128x96 window of 16 + 16 frames."""
    folder = tmp_path_factory.mktemp("demo")
    port = _free_port()
    log = (folder / "demo.log").open("w")
    command = [sys.executable, str(ROOT / "apps" / "demo"), "--port", str(port), *WINDOW]
    command += ["--out", str(folder / "out"), "--runs", str(folder / "none")]
    command += ["--examples", str(folder / "none")]
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
