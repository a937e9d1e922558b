"""Retake docs/report.png and docs/demo.png on real videos (headless Chromium).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/screenshots.py            # both
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/screenshots.py --only report

The report: ``apps/sample`` on two videos of ``../shared/data`` (never copied here) with
``--checkpoint`` (default the constant-velocity baseline: the pictures show the
renders, not a model), opened from ``file://``, the first clip's sample 0 paused in its
future. The demo: ``apps/demo`` on 127.0.0.1 with the same window, the first video
uploaded, Predict pressed, the overlay paused in its future. Needs Debian's
``chromium`` and ``chromium-driver`` and selenium (the test dependencies).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
VIDEOS = [
    DATA / "videos" / "sam2_01_dog_person_1280x720_289f.mp4",
    DATA / "videos_more" / "gsam2_highway_640x360_162f.mp4",
]
# 26 x 15 = 390 points, 32 + 32 frames (about a second each at 30 fps)
WINDOW = ["--width", "416", "--height", "240", "--stride", "16", "--history", "32"]
WINDOW += ["--future", "32"]


def _browser(width: int, height: int):
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={width},{height}", "--allow-file-access-from-files",
                "--hide-scrollbars"):  # fmt: skip
        options.add_argument(arg)
    return webdriver.Chrome(
        options=options, service=webdriver.ChromeService(shutil.which("chromedriver"))
    )


def _wait(driver, script: str, timeout: float = 300.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = driver.execute_script(f"return ({script});")
        if value:
            return value
        time.sleep(0.3)
    raise TimeoutError(script)


def _pause_in_future(driver, selector: str, seconds: float) -> None:
    """Pause the video at ``selector`` at ``seconds`` and wait for that frame."""
    driver.execute_script(
        f"const v = document.querySelector('{selector}'); v.pause(); v.currentTime = {seconds};"
    )
    _wait(driver, f"(v => v.readyState >= 2 && !v.seeking)(document.querySelector('{selector}'))")
    time.sleep(0.5)


def report(out: Path, checkpoint: str, target: Path) -> None:
    folder = out / "report"
    command = [sys.executable, str(ROOT / "apps" / "sample"), *map(str, VIDEOS)]
    command += ["--checkpoint", checkpoint, "--out", str(folder), *WINDOW]
    command += ["--num-samples", "3", "--no-gif"]
    if not (folder / "index.html").is_file():  # a --work folder keeps it for retakes
        subprocess.run(command, check=True)
    driver = _browser(1280, 1240)
    try:
        driver.get((folder / "index.html").as_uri())
        _wait(driver, "Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
        _pause_in_future(driver, "section.clip figure:not([hidden]) video", (32 + 24) / 29.97)
        driver.save_screenshot(str(target))
    finally:
        driver.quit()


def demo(out: Path, target: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    none = str(out / "none")
    command = [sys.executable, str(ROOT / "apps" / "demo"), "--port", str(port), *WINDOW]
    command += ["--runs", none, "--examples", none, "--out", str(out / "demo")]
    log = (out / "demo.log").open("w")
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    driver = None
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(url, timeout=5).close()
                break
            except OSError:
                time.sleep(0.5)
        from selenium.webdriver.common.by import By

        driver = _browser(1280, 1500)
        driver.get(url)
        _wait(driver, "document.querySelector('#predict')")
        upload = driver.find_element(By.CSS_SELECTOR, "#input-video input[type=file]")
        upload.send_keys(str(VIDEOS[0]))
        _wait(driver, "(i => i && i.naturalWidth > 0)(document.querySelector('#boundary img'))")
        driver.find_element(By.CSS_SELECTOR, "#predict").click()
        _wait(driver, "(v => v && v.readyState >= 1 && v.duration > 0)"
                      "(document.querySelector('#overlay video'))", timeout=900)  # fmt: skip
        _wait(driver, "(v => v && v.readyState >= 1)(document.querySelector('#truth video'))")
        for which in ("#overlay", "#grid", "#truth"):
            _pause_in_future(driver, f"{which} video", (32 + 24) / 29.97)
        driver.execute_script("window.scrollTo(0, 0);")
        driver.save_screenshot(str(target))
    finally:
        if driver is not None:
            driver.quit()
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["report", "demo"])
    parser.add_argument("--checkpoint", default="baseline:constvel")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs")
    parser.add_argument("--work", type=Path, help="keep the outputs here (default: a temp folder)")
    args = parser.parse_args()
    missing = [str(v) for v in VIDEOS if not v.is_file()]
    if missing:
        sys.exit(f"videos not found: {missing} (../shared/data)")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory() as tmp:
        out = args.work or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        if args.only in (None, "report"):
            report(out, args.checkpoint, args.docs / "report.png")
            print(f"wrote {args.docs / 'report.png'}")
        if args.only in (None, "demo"):
            demo(out, args.docs / "demo.png")
            print(f"wrote {args.docs / 'demo.png'}")


if __name__ == "__main__":
    main()
