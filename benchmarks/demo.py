"""Start-up time of the live demo (`uv run apps/demo`): launch to the page being served.

    .venv/bin/python benchmarks/demo.py            # 3 starts, each measured
    .venv/bin/python benchmarks/demo.py --quick    # 1 start

Each start runs `python apps/demo --port P` (baseline checkpoints, no example videos),
polls `http://127.0.0.1:P/` until it answers 200, and reports the wall seconds from the
launch and the CPU seconds the process had used by then (user + system, from
/proc/PID/stat: less sensitive than wall time to other jobs on a shared machine). Model
loading is not in it: the demo imports the forecasting code (torch) in the background
after the page is up, and loads a checkpoint on its first use. Also printed: the load
average before each start.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TICKS = os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def start_once(folder: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds) from launch to the first 200 of the page."""
    port = _free_port()
    command = [sys.executable, str(ROOT / "apps" / "demo"), "--port", str(port)]
    command += ["--out", str(folder / "out"), "--runs", str(folder), "--examples", str(folder)]
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the demo exited with {proc.returncode}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).close()
                return time.perf_counter() - start, _cpu_seconds(proc.pid)
            except OSError:
                time.sleep(0.05)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one start instead of three")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(1 if args.quick else 3):
            load = os.getloadavg()[0]
            wall, cpu = start_once(Path(tmp))
            print(
                f"start {k}: page served after {wall:.2f} s wall, {cpu:.2f} s CPU (load {load:.1f})"
            )


if __name__ == "__main__":
    main()
