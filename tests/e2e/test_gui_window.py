"""The real app in a real X window (Xvfb): index with the CLI, open the GUI with a search,
and check the screenshot shows photo thumbnails, not a blank window."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests.helpers import FIXTURES, run_cli

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="Xvfb is a Linux test (CI installs it)"
)


def test_window_under_xvfb_shows_search_results(tmp_path: Path) -> None:
    xvfb_run = shutil.which("xvfb-run")
    assert xvfb_run, "xvfb-run is missing: `make setup` (tools/system-deps.sh) installs it"
    photos = tmp_path / "photos"
    for label in ("shoes", "hat", "dress", "pants"):
        shutil.copytree(FIXTURES / "clothing-test" / label, photos / label)
    library = tmp_path / "library"
    run_cli("add", str(photos), library=library)
    run_cli(
        "index",
        "--model",
        f"clothing-clip:{FIXTURES / 'clothing-clip.safetensors'}",
        "--model-config",
        str(FIXTURES / "clothing-clip.json"),
        library=library,
    )
    shot = tmp_path / "window.png"
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "config"), "PYTHONWARNINGS": "ignore"}
    env.pop("QT_QPA_PLATFORM", None)  # a real X11 window, not the offscreen plugin
    proc = subprocess.run(
        [
            xvfb_run,
            "-a",
            "-s",
            "-screen 0 1280x800x24",
            sys.executable,
            "-m",
            "clipdesk",
            "--library",
            str(library),
            "gui",
            "--search",
            "a photo of shoes",
            "--screenshot",
            str(shot),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "(xcb," in proc.stdout and "settled" in proc.stdout, proc.stdout
    image = Image.open(shot).convert("RGB")
    width, height = image.size
    assert width >= 1000 and height >= 600
    # The grid (the middle of the window) holds photos: thousands of colours, where an
    # empty or blank window has a few hundred at most (text antialiasing).
    grid = image.crop((int(width * 0.25), int(height * 0.2), int(width * 0.7), int(height * 0.8)))
    colours = len(grid.getcolors(maxcolors=1 << 24) or [])
    assert colours > 3000, f"the grid looks empty ({colours} colours)"
    blank = Image.new("RGB", grid.size, grid.getpixel((0, 0)))
    assert grid.tobytes() != blank.tobytes()
