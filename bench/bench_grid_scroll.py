"""Scrolling through 100,000 photos: model reset and frame times of the real grid.

The rows reuse the committed test photos (so only a few hundred thumbnails are made,
once, before timing); what is measured is the view, model and delegate with 100,000 rows.

    .venv/bin/python bench/bench_grid_scroll.py [--rows N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from bench._common import REPO, print_machine


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    print_machine("Results grid with many rows", torch_threads=False)
    work = Path(tempfile.mkdtemp(prefix="clipdesk-grid-"))
    os.environ["XDG_CONFIG_HOME"] = str(work / "config")

    from PySide6.QtCore import QSettings

    from clipdesk.gui.app import application
    from clipdesk.gui.main_window import MainWindow
    from clipdesk.library import Library
    from clipdesk.library.browsing import PhotoRef
    from clipdesk.library.scanning import scan_folders
    from clipdesk.progress import CancelToken
    from clipdesk.services import Clipdesk

    app = application()
    services = Clipdesk(Library(work / "library"))
    services.add_folders([REPO / "tests" / "fixtures" / "clothing-test"])
    list(scan_folders(services.library, CancelToken()))
    real = services.browse()
    for ref in real:  # thumbnails on disk first: the timing is about the view
        services.thumbnails.make(ref.path, ref.fingerprint)
    refs = [
        PhotoRef(i, real[i % len(real)].path, real[i % len(real)].fingerprint, 400, 500, 0.0)
        for i in range(args.rows)
    ]
    scores = [1.0 - i / args.rows for i in range(args.rows)]
    settings = QSettings(str(work / "clipdesk.ini"), QSettings.Format.IniFormat)
    window = MainWindow(services, settings, index_on_start=False)
    window.resize(1280, 800)
    window.show()
    while window.runner.active or window.status is None:  # the window's own first listing
        app.processEvents()  # a benchmark may; the app never does

    started = time.perf_counter()
    window.model.set_photos(refs, scores)
    window.grid.setVisible(True)
    window.grid.viewport().repaint()
    reset_ms = 1000 * (time.perf_counter() - started)
    print(f"rows: {args.rows:,}; model reset + first paint {reset_ms:.0f} ms")
    # The view lays rows out in batches between events (LayoutMode.Batched), so the
    # window stays responsive; time until the whole list is laid out, and the longest step.
    bar = window.grid.verticalScrollBar()
    cell = window.delegate.cell_size()
    columns = max(window.grid.viewport().width() // cell.width(), 1)
    rows_px = (args.rows + columns - 1) // columns * cell.height()
    expected = rows_px - window.grid.viewport().height()
    steps = []
    give_up = time.perf_counter() + 60
    while bar.maximum() < expected * 0.98 and time.perf_counter() < give_up:
        t0 = time.perf_counter()
        app.processEvents()
        steps.append(1000 * (time.perf_counter() - t0))
    layout_ms = 1000 * (time.perf_counter() - started)
    print(
        f"whole list laid out after {layout_ms:.0f} ms in {len(steps)} event-loop steps "
        f"(scroll range {bar.maximum():,} px of about {expected:,}); "
        f"longest step {max(steps):.1f} ms"
    )
    # Time whole-viewport repaints while paging down (thumbnails load as cells appear).
    frames = []
    deadline = time.perf_counter() + 60
    while bar.value() < bar.maximum() and time.perf_counter() < deadline and len(frames) < 2000:
        bar.setValue(bar.value() + bar.pageStep())
        app.processEvents()
        t0 = time.perf_counter()
        window.grid.viewport().repaint()
        frames.append(1000 * (time.perf_counter() - t0))
    frames.sort()
    print(
        f"paged through {len(frames):,} screens; repaint p50 {frames[len(frames) // 2]:.1f} ms, "
        f"p99 {frames[int(len(frames) * 0.99)]:.1f} ms, worst {frames[-1]:.1f} ms "
        f"(a 60 Hz frame is 16.7 ms)"
    )
    t0 = time.perf_counter()
    window.grid.scrollToBottom()
    window.grid.viewport().repaint()
    print(f"jump to the end: {1000 * (time.perf_counter() - t0):.1f} ms")
    window.close()
    services.library.close()
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
