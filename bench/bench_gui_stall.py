"""How long does the window freeze while it indexes and searches?

Opens the real main window (offscreen unless a display is set), indexes 1,000 photos with
ViT-B-32 (seeded random weights: the same compute as real ones), types a search every
2 s and scrolls the grid meanwhile. A 5 ms timer on the GUI thread records every gap
in the event loop; a stall is the time a tick came late. Target: longest stall < 100 ms.

    .venv/bin/python bench/bench_gui_stall.py [--photos N] [--model SPEC]

Photos: the first N of ../shared/data/clothing-small when present, else N variants
(crops, flips, colour shifts) of the committed test photos.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench._common import DATA, REPO, print_machine

QUERIES = ["a red dress", "shoes on a wooden floor", "a striped shirt", "a hat", "blue jeans"]


def _photos(target: Path, count: int) -> str:
    source = DATA / "clothing-small"
    files = sorted(source.rglob("*.jpg"))[:count] if source.is_dir() else []
    if len(files) >= count:
        for i, path in enumerate(files):
            shutil.copy(path, target / f"{i:05d}.jpg")
        return f"{count} photos of ../shared/data/clothing-small"
    from PIL import Image, ImageOps

    base = sorted((REPO / "tests" / "fixtures" / "clothing-test").rglob("*.jpg"))
    rng = random.Random(0)
    for i in range(count):
        with Image.open(base[i % len(base)]) as img:
            img = img.convert("RGB")
            w, h = img.size
            box = (rng.randint(0, w // 8), rng.randint(0, h // 8), w - rng.randint(0, w // 8), h)
            img = img.crop(box)
            if rng.random() < 0.5:
                img = ImageOps.mirror(img)
            scale = rng.uniform(0.85, 1.15)
            img = img.point([min(255, int(v * scale)) for v in range(256)] * 3)
            img.save(target / f"{i:05d}.jpg", quality=90)
    return f"{count} variants of the committed test photos"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=1000)
    parser.add_argument("--model", default="ViT-B-32:random")
    args = parser.parse_args()
    print_machine("GUI event-loop stalls while indexing and searching")
    work = Path(tempfile.mkdtemp(prefix="clipdesk-stall-"))
    os.environ["XDG_CONFIG_HOME"] = str(work / "config")
    os.environ.setdefault("CLIPDESK_MODELS_DIR", str(work / "models"))
    folder = work / "photos"
    folder.mkdir()
    print("photos:", _photos(folder, args.photos))

    from PySide6.QtCore import QElapsedTimer, QSettings, QTimer

    from clipdesk.gui.app import application
    from clipdesk.gui.main_window import MainWindow
    from clipdesk.library import Library
    from clipdesk.services import Clipdesk
    from clipdesk.spec import ModelSpec

    app = application()
    services = Clipdesk(Library(work / "library"))
    started = time.perf_counter()
    services.use_model(ModelSpec.parse(args.model), "cpu")
    print(f"model {args.model} loaded in {time.perf_counter() - started:.1f} s (before the run)")
    services.add_folders([folder])
    settings = QSettings(str(work / "clipdesk.ini"), QSettings.Format.IniFormat)
    window = MainWindow(services, settings, index_on_start=False)
    window.resize(1280, 800)
    window.show()

    gaps: list[float] = []
    clock = QElapsedTimer()
    clock.start()
    last = [clock.nsecsElapsed()]

    def tick() -> None:
        now = clock.nsecsElapsed()
        gaps.append((now - last[0]) / 1e6)
        last[0] = now

    ticker = QTimer()
    ticker.setInterval(5)
    ticker.timeout.connect(tick)
    searches = [0]
    shown: list[float] = []
    asked = [0.0]

    def search() -> None:
        if window.job is None:
            return
        window.search_field.setText(QUERIES[searches[0] % len(QUERIES)])
        searches[0] += 1
        asked[0] = time.perf_counter()
        window._search_typed_text()

    def results(_count: int) -> None:
        if asked[0]:
            shown.append(time.perf_counter() - asked[0])
            asked[0] = 0.0

    def scroll() -> None:
        bar = window.grid.verticalScrollBar()
        bar.setValue((bar.value() + 120) % max(bar.maximum(), 1))

    searcher = QTimer()
    searcher.setInterval(2000)
    searcher.timeout.connect(search)
    scroller = QTimer()
    scroller.setInterval(50)
    scroller.timeout.connect(scroll)
    window.results_shown.connect(results)
    begun = [0.0]

    first_embed: list[float] = []

    def progressed(progress: object) -> None:
        if getattr(progress, "phase", "") == "embed" and not first_embed:
            first_embed.append(time.perf_counter())

    window.job_progressed.connect(progressed)

    def finished(kind: str) -> None:
        if kind == "index":
            ticker.stop()
            searcher.stop()
            scroller.stop()
            QTimer.singleShot(0, window.close)

    window.job_finished.connect(finished)

    def begin() -> None:
        begun[0] = time.perf_counter()
        last[0] = clock.nsecsElapsed()
        ticker.start()
        searcher.start()
        scroller.start()
        window.start_indexing()

    QTimer.singleShot(500, begin)
    app.exec()
    elapsed = time.perf_counter() - begun[0]
    stalls = sorted(max(g - 5.0, 0.0) for g in gaps)
    status = services.status()
    print(
        f"indexed {status.indexed} of {status.photos} photos in {elapsed:.1f} s "
        f"({status.indexed / elapsed:.1f} photos/s, scan included)"
    )
    if first_embed:
        print(
            f"before the first batch (scan, and on a first run the encoder-backend "
            f"measurement): {first_embed[0] - begun[0]:.1f} s; then "
            f"{status.indexed / (time.perf_counter() - first_embed[0]):.1f} photos/s; "
            f"encoder: {status.device}"
        )
    print(
        f"searches while indexing: {len(shown)}, time to results "
        f"median {sorted(shown)[len(shown) // 2] * 1000:.0f} ms"
        if shown
        else "no searches"
    )
    print(
        f"event-loop ticks: {len(gaps)}; stall p50 {stalls[len(stalls) // 2]:.1f} ms, "
        f"p99 {stalls[int(len(stalls) * 0.99)]:.1f} ms, longest {stalls[-1]:.1f} ms "
        f"(target < 100 ms); stalls over 50 ms: {sum(s > 50 for s in stalls)}, "
        f"over 100 ms: {sum(s > 100 for s in stalls)}"
    )
    services.library.close()
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
