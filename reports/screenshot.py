"""Render a report page to PNG with headless Chromium (for tests and for looking at a report).

``python -m featbench.reports.screenshot report.html out.png [WIDTH HEIGHT]``. Network access is
switched off as far as Chromium's flags allow, so a page that tried to load anything external
would render without it.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


def screenshot(html: Path, png: Path, width: int = 1280, height: int = 4000, timeout: float = 90.0) -> Path:
    browser = find_chromium()
    if browser is None:
        raise FileNotFoundError("no chromium on PATH (Debian: apt-get install chromium)")
    png = Path(png).resolve()
    png.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="featbench-chromium-") as profile:
        cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--hide-scrollbars", f"--user-data-dir={profile}", f"--screenshot={png}",
               f"--window-size={width},{height}", Path(html).resolve().as_uri()]
        env = dict(os.environ, HOME=profile)
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if not png.is_file():
        raise RuntimeError(f"chromium wrote no screenshot (exit {proc.returncode}): {proc.stderr[-2000:]}")
    return png


if __name__ == "__main__":  # pragma: no cover
    args = sys.argv[1:]
    if len(args) < 2:
        sys.exit("usage: python -m featbench.reports.screenshot REPORT.html OUT.png [WIDTH HEIGHT]")
    w, h = (int(args[2]), int(args[3])) if len(args) >= 4 else (1280, 4000)
    print(screenshot(Path(args[0]), Path(args[1]), w, h))
