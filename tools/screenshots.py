"""Make the README screenshots of the real app: a search, the similar view, indexing.

    xvfb-run -a -s "-screen 0 1280x800x24" .venv/bin/python tools/screenshots.py docs/screenshots

Uses the project's trained clothing model and the committed held-out photos, in a
throwaway library; nothing of the user's is touched.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"


def main() -> int:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/screenshots").resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="clipdesk-shots-"))
    os.environ["XDG_CONFIG_HOME"] = str(work / "config")
    os.environ.setdefault("CLIPDESK_MODELS_DIR", str(work / "models"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    photos = work / "Pictures" / "wardrobe"
    shutil.copytree(FIXTURES / "clothing-test", photos, ignore=shutil.ignore_patterns("LICENSE"))

    from PySide6.QtCore import QSettings, QTimer

    from clipdesk.gui.app import application
    from clipdesk.gui.main_window import MainWindow
    from clipdesk.library import Library
    from clipdesk.services import Clipdesk
    from clipdesk.spec import ModelSpec

    app = application()
    services = Clipdesk(Library(work / "library"))
    spec = ModelSpec.parse(
        f"clothing-clip:{FIXTURES / 'clothing-clip.safetensors'}", FIXTURES / "clothing-clip.json"
    )
    services.use_model(spec, "cpu")
    services.add_folders([photos])
    settings = QSettings(str(work / "clipdesk.ini"), QSettings.Format.IniFormat)
    window = MainWindow(services, settings, index_on_start=False)
    window.resize(1280, 800)
    window.show()
    steps: list[str] = []

    def shot(name: str) -> None:
        window.grab().save(str(out / name))
        print("saved", out / name)

    def on_progress(progress: object) -> None:
        done = getattr(progress, "done", 0)
        if getattr(progress, "phase", "") == "embed" and done >= 120 and "indexing" not in steps:
            steps.append("indexing")
            window.toggle_pause()  # hold still for the picture
            QTimer.singleShot(1500, lambda: (shot("indexing.png"), window.toggle_pause()))

    def settled(then: object) -> None:
        def check() -> None:
            thumbs = window.thumbnails
            if window.runner.active or thumbs._waiting or thumbs._in_flight:
                QTimer.singleShot(200, check)
            else:
                QTimer.singleShot(400, then)  # type: ignore[arg-type]

        QTimer.singleShot(200, check)

    def after_index(kind: str) -> None:
        if kind == "index" and "tagged" not in steps:
            steps.append("tagged")
            labels = ["dress", "hat", "pants", "shoes", "shorts", "skirt", "t-shirt", "jacket"]
            window.save_and_tag("clothes", labels, None, False)
        elif kind == "tag" and "search" not in steps:
            steps.append("search")
            window.search_field.setText("a red dress")
            window._search_typed_text()
            settled(after_search)

    def after_search() -> None:
        shot("search.png")
        window.grid.setCurrentIndex(window.model.index(2))
        window.find_similar(window.model.refs[2])
        settled(after_similar)

    def after_similar() -> None:
        shot("similar.png")
        window.close()

    window.job_progressed.connect(on_progress)
    window.job_finished.connect(after_index)
    window.start_indexing()
    app.exec()
    services.library.close()
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
