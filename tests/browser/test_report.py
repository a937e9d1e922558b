"""The static report (``OUT/index.html`` of apps/sample) in headless Chromium, from file://."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from trajloom.data.synthetic import SceneConfig, make_scene
from trajloom.data.video import write_video
from trajloom_sample.cli import app

pytestmark = pytest.mark.browser

SIZE = {"width": 128, "height": 96, "stride": 16, "history": 16, "future": 16}


def _sample_run(folder: Path, checkpoint: str = "baseline:constvel") -> Path:
    """apps/sample on two synthetic videos, 3 futures each; returns the output folder."""
    cfg = SceneConfig(width=SIZE["width"], height=SIZE["height"], stride=16, num_frames=32)
    videos = []
    for seed in (1, 2):
        videos.append(write_video(folder / f"scene{seed}.mp4", make_scene(seed, cfg).frames, 8))
    out = folder / "out"
    options = [f"--{k}={v}" for k, v in SIZE.items()]
    args = [*map(str, videos), "--checkpoint", checkpoint, "--out", str(out), *options]
    result = CliRunner().invoke(app, [*args, "--num-samples", "3", "--no-gif"])
    assert result.exit_code == 0, result.output
    return out


def _wait(driver, script: str, timeout: float = 20.0):
    """Poll a JS expression until it is truthy; returns its value."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = driver.execute_script(f"return ({script});")
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {script}")


SHOWN = "Array.from(arguments[0].querySelectorAll('.views figure')).filter(f => !f.hidden).map(f => f.dataset.view)"


def test_report_switches_samples_plays_and_sorts(browser, console_errors, screenshot, tmp_path):
    from selenium.webdriver.common.by import By

    out = _sample_run(tmp_path)
    browser.get((out / "index.html").as_uri())
    clips = browser.find_elements(By.CSS_SELECTOR, "section.clip")
    assert [c.get_attribute("id") for c in clips] == ["clip-scene1", "clip-scene2"]
    clip = clips[0]
    assert browser.execute_script(f"return {SHOWN};", clip) == ["sample_000"]
    # the shown video decodes from the file system: metadata and a duration
    duration = _wait(
        browser,
        "(v => v.readyState >= 1 && v.duration > 0 && v.duration)"
        "(document.querySelector('#clip-scene1 figure:not([hidden]) video'))",
    )
    assert duration == pytest.approx(32 / 8, abs=0.3)  # 32 frames at 8 fps

    clip.find_element(By.CSS_SELECTOR, 'button[data-view="sample_001"]').click()
    assert browser.execute_script(f"return {SHOWN};", clip) == ["sample_001"]
    marked = clip.find_elements(By.CSS_SELECTOR, "tr.shown td")
    assert marked and marked[0].text == "sample 1"
    screenshot("report")

    clip.find_element(By.CSS_SELECTOR, 'button[data-view="truth"]').click()
    assert browser.execute_script(f"return {SHOWN};", clip) == ["truth"]
    clip.find_element(By.CSS_SELECTOR, 'button[data-view="together"]').click()
    assert browser.execute_script(f"return {SHOWN};", clip) == ["together"]
    clip.find_element(By.CSS_SELECTOR, 'button[data-view="all"]').click()
    shown = browser.execute_script(f"return {SHOWN};", clip)
    assert shown == ["sample_000", "sample_001", "sample_002", "together", "truth"]
    # the other clip keeps its own choice
    assert browser.execute_script(f"return {SHOWN};", clips[1]) == ["sample_000"]

    # sort the clips table by minADE, both ways
    table = browser.find_element(By.CSS_SELECTOR, "table.sortable")
    header = table.find_element(By.XPATH, ".//th[text()='minADE (px)']")
    column = "Array.from(arguments[0].tBodies[0].rows).map(r => Number(r.cells[3].dataset.value))"
    header.click()
    up = browser.execute_script(f"return {column};", table)
    header.click()
    down = browser.execute_script(f"return {column};", table)
    assert up == sorted(up) and down == sorted(up, reverse=True) and len(up) == 2
    assert console_errors() == []
    # the console check sees errors: a page that throws is caught
    browser.get("data:text/html,<script>undefinedFunction()</script>")
    assert any("undefinedFunction" in e["message"] for e in console_errors())


# Per clip: [its error plot's drawn size, the labels of its lines, its motion summary's
# natural and drawn width]; the lines' labels come from the SVG the browser laid out.
GLANCE = """
const c = arguments[0], svg = c.querySelector('svg.errplot'), img = c.querySelector('img.summary');
const box = svg.getBoundingClientRect();
const labels = Array.from(svg.querySelectorAll('polyline')).map(p => p.dataset.label);
return [box.width, box.height, labels, img.complete && img.naturalWidth, img.getBoundingClientRect().width];
"""


def test_report_plots_errors_over_time_and_shows_thumbnails(
    browser, console_errors, screenshot, tmp_path
):
    from selenium.webdriver.common.by import By

    out = _sample_run(tmp_path)
    browser.get((out / "index.html").as_uri())
    _wait(browser, "Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
    for clip in browser.find_elements(By.CSS_SELECTOR, "section.clip"):
        width, height, labels, natural, shown = browser.execute_script(GLANCE, clip)
        assert width > 200 and height > 100  # laid out, not collapsed
        # one line per sample and per baseline (a gap would split one into two)
        assert set(labels) == {"sample 0", "sample 1", "sample 2", "static", "constant velocity"}
        assert (
            natural == SIZE["width"] and 0 < shown <= 430
        )  # the source-size still, 420 px + border
    # the clips table: a thumbnail per clip, and a click on one goes to its clip
    thumbs = browser.find_elements(By.CSS_SELECTOR, "table.sortable img.thumb")
    assert len(thumbs) == 2 and all(t.get_attribute("naturalWidth") != "0" for t in thumbs)
    thumbs[1].click()
    assert browser.execute_script("return location.hash;") == "#clip-scene2"
    browser.execute_script("window.scrollTo(0, 0);")
    screenshot("report-glance")
    assert console_errors() == []
