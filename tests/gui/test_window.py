"""User flows through the real main window (offscreen), with the trained clothing CLIP."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QUrl
from PySide6.QtGui import QDropEvent, QGuiApplication, QPixmapCache
from sqlalchemy import func, select

from clipdesk.gui.history import View
from clipdesk.gui.main_window import MainWindow
from clipdesk.library import db
from clipdesk.services import Clipdesk
from tests.helpers import FIXTURES

JOB_TIMEOUT_MS = 120_000


@pytest.fixture()
def window(qtbot: Any, services: Clipdesk, settings: Any) -> Iterator[MainWindow]:
    QPixmapCache.clear()  # process-wide: would hide one test's thumbnails from the next
    win = MainWindow(services, settings, index_on_start=False)
    qtbot.addWidget(win)
    with qtbot.waitSignal(win.status_refreshed, timeout=10_000):
        win.show()
    yield win
    win.close()
    assert win.runner.active == 0 and win.job_runner.active == 0, "a worker outlived the window"
    assert win.runner.pool.activeThreadCount() == 0
    assert win.thumbnails.pool.activeThreadCount() == 0


def _index(qtbot: Any, win: MainWindow, folder: Path) -> None:
    with qtbot.waitSignal(
        win.job_finished, timeout=JOB_TIMEOUT_MS, check_params_cb=lambda kind: kind == "index"
    ):
        win.add_folders([str(folder)])
    _settle(qtbot, win)


def _settle(qtbot: Any, win: MainWindow) -> None:
    """Wait until no background call of the window runs (the grid has reloaded)."""
    qtbot.waitUntil(lambda: win.runner.active == 0, timeout=20_000)


def _indexed_count(services: Clipdesk) -> int:
    with services.library.session() as s:
        return s.scalar(select(func.count()).select_from(db.Embedding)) or 0


def _search(qtbot: Any, win: MainWindow, text: str) -> None:
    with qtbot.waitSignal(win.results_shown, timeout=20_000):
        win.search_field.setFocus()
        qtbot.keyClicks(win.search_field, text)  # debounced: one search after typing stops


def _labels_of_results(win: MainWindow, n: int) -> list[str]:
    return [Path(ref.path).parent.name for ref in win.model.refs[:n]]


def test_first_run_offers_a_folder_and_a_model(qtbot: Any, library: Any, settings: Any) -> None:
    from clipdesk.services import Clipdesk

    win = MainWindow(Clipdesk(library), settings, index_on_start=False)
    qtbot.addWidget(win)
    with qtbot.waitSignal(win.status_refreshed, timeout=10_000):
        win.show()
    assert win.pages.currentWidget() is win.welcome
    assert win.welcome.add_button.isVisible()
    # No model is installed in the test models folder: offer a download with its size.
    assert win.welcome.model_box.isVisible()
    assert "MB" in win.welcome.download_button.text()
    assert win.welcome.import_button.isVisible()
    assert win.model_label.text() == "No model yet"
    win.close()


def test_add_index_search_similar_and_history(
    qtbot: Any, window: MainWindow, services: Clipdesk, clothing_photos: Path
) -> None:
    _index(qtbot, window, clothing_photos)
    assert _indexed_count(services) == 60
    assert window.pages.currentIndex() == 1
    assert window.job_label.text() == "Library up to date."
    assert "clothing-test" not in window.sidebar.tree.topLevelItem(1).child(0).text(0)
    assert "60 photos" in window.sidebar.tree.topLevelItem(1).child(0).text(0)

    _search(qtbot, window, "a photo of shoes")
    assert window.history.current == View("text", "a photo of shoes")
    assert len(window.history._views) == 2  # "all" and the settled query, not every keystroke
    top = _labels_of_results(window, 5)
    assert top.count("shoes") >= 4, top
    assert window.model.scores is not None and window.model.scores == sorted(
        window.model.scores, reverse=True
    )
    kept = window.model.rowCount()  # the relevance cutoff is on by default
    assert window.header_label.text() == (
        f"“a photo of shoes”: {kept} relevant photos, best match first"
    )
    first = window.model.refs[0]

    # Double-click the first photo: its neighbours, itself left out.
    rect = window.grid.visualRect(window.model.index(0))
    viewport = window.grid.viewport()
    with qtbot.waitSignal(window.results_shown, timeout=20_000):
        # A real double-click is a press/release, then a second press as a double-click.
        qtbot.mouseClick(viewport, Qt.MouseButton.LeftButton, pos=rect.center())
        qtbot.mouseDClick(viewport, Qt.MouseButton.LeftButton, pos=rect.center())
    assert window.history.current is not None and window.history.current.kind == "similar"
    assert first.photo_id not in [ref.photo_id for ref in window.model.refs]
    assert "similar to" in window.header_label.text()

    # Back and forward, as in a browser.
    with qtbot.waitSignal(window.results_shown, timeout=20_000):
        qtbot.keyClick(window, Qt.Key.Key_Left, Qt.KeyboardModifier.AltModifier)
    assert window.history.current == View("text", "a photo of shoes")
    assert window.model.refs[0] == first
    with qtbot.waitSignal(window.results_shown, timeout=20_000):
        window.forward_action.trigger()
    assert window.history.current is not None and window.history.current.kind == "similar"

    # Esc in the search field clears it and shows all photos again.
    window.search_field.clear()
    _search(qtbot, window, "hats")
    with qtbot.waitSignal(window.results_shown, timeout=20_000):
        qtbot.keyClick(window.search_field, Qt.Key.Key_Escape)
    assert window.search_field.text() == ""
    assert window.history.current == View("all")
    assert window.model.rowCount() == 60 and window.model.scores is None


def test_the_latest_search_wins(
    qtbot: Any, window: MainWindow, services: Clipdesk, clothing_photos: Path
) -> None:
    _index(qtbot, window, clothing_photos)
    shown: list[int] = []
    window.results_shown.connect(shown.append)
    window.navigate(View("text", "a hat"))
    window.navigate(View("text", "trousers"))
    window.navigate(View("text", "a dress"))
    qtbot.waitUntil(lambda: window.runner.active == 0, timeout=20_000)
    qtbot.wait(50)
    assert len(shown) == 1  # the older searches were dropped, not shown in turn
    assert window.header_label.text().startswith("“a dress”")
    expected = [h.photo_id for h in services.search("a dress", cutoff=True).hits]
    assert [ref.photo_id for ref in window.model.refs] == expected


def test_cancel_indexing_midway_then_resume(
    qtbot: Any, window: MainWindow, services: Clipdesk, clothing_photos: Path
) -> None:
    def cancel_at_first_batch(progress: Any) -> None:
        if progress.phase == "embed" and window.job is not None:
            window.cancel_button.click()

    window.job_progressed.connect(cancel_at_first_batch)
    with qtbot.waitSignal(window.job_finished, timeout=JOB_TIMEOUT_MS):
        window.add_folders([str(clothing_photos)])
    _settle(qtbot, window)
    done = _indexed_count(services)
    assert 0 < done < 60, done
    assert window.resume_button.isVisible()
    assert "resume" in window.job_label.text()
    window.job_progressed.disconnect(cancel_at_first_batch)
    with qtbot.waitSignal(window.job_finished, timeout=JOB_TIMEOUT_MS):
        window.resume_button.click()
    assert _indexed_count(services) == 60
    assert not window.resume_button.isVisible()


def test_pause_holds_indexing_until_resumed(
    qtbot: Any, window: MainWindow, services: Clipdesk, clothing_photos: Path
) -> None:
    services.add_folders([clothing_photos])
    with qtbot.waitSignal(window.status_refreshed, timeout=10_000):
        window.refresh_status()
    window.start_indexing()
    window.toggle_pause()  # before the worker's first step: it holds at its first yield
    assert window.pause_button.text() == "Resume"
    assert window.job_label.text() == "Paused after the current batch."
    qtbot.wait(1500)
    assert window.job is not None and _indexed_count(services) == 0
    with qtbot.waitSignal(window.job_finished, timeout=JOB_TIMEOUT_MS):
        window.pause_button.click()
    assert _indexed_count(services) == 60


def test_tagging_from_the_window(
    qtbot: Any, window: MainWindow, services: Clipdesk, clothing_photos: Path
) -> None:
    _index(qtbot, window, clothing_photos)
    labels = ["dress", "hat", "pants", "shoes", "shorts", "skirt"]
    with qtbot.waitSignal(
        window.job_finished, timeout=JOB_TIMEOUT_MS, check_params_cb=lambda k: k == "tag"
    ):
        window.save_and_tag("clothes", labels, None, False)
    assert window.job_label.text() == "Tagging done."
    tags_section = window.sidebar.tree.topLevelItem(2)
    shown_tags = [tags_section.child(i).text(0) for i in range(tags_section.childCount())]
    assert any(t.startswith("shoes  (") for t in shown_tags), shown_tags
    counts = window.status.tags if window.status else {}
    # Click a tag: only photos with it.
    with qtbot.waitSignal(window.results_shown, timeout=20_000):
        window.sidebar.tag_requested.emit("shoes")
    assert window.model.rowCount() == counts["shoes"]
    assert _labels_of_results(window, 60).count("shoes") >= counts["shoes"] * 0.6
    # The details panel lists the photo's tags with their confidence.
    qtbot.waitUntil(lambda: "%" in window.details.fields["Tags"].text(), timeout=10_000)
    assert "shoes" in window.details.fields["Tags"].text()


def test_thumbnails_live_in_the_library_and_photos_stay_untouched(
    qtbot: Any, window: MainWindow, services: Clipdesk, clothing_photos: Path
) -> None:
    before = sorted((p, p.stat().st_mtime_ns) for p in clothing_photos.rglob("*"))
    _index(qtbot, window, clothing_photos)
    qtbot.waitUntil(lambda: window.thumbnails.made >= 8, timeout=30_000)
    cached = list(services.thumbnails.folder.rglob("*.jpg"))
    assert len(cached) >= 8
    assert sorted((p, p.stat().st_mtime_ns) for p in clothing_photos.rglob("*")) == before


def test_keyboard_copy_path_focus_search_and_drop_an_image(
    qtbot: Any, window: MainWindow, clothing_photos: Path
) -> None:
    _index(qtbot, window, clothing_photos)
    window.grid.setFocus()
    first = window.model.refs[0]
    qtbot.keyClick(window.grid, Qt.Key.Key_C, Qt.KeyboardModifier.ControlModifier)
    assert QGuiApplication.clipboard().text() == first.path
    qtbot.keyClick(window.grid, Qt.Key.Key_Right)
    assert window.grid.currentIndex().row() == 1
    qtbot.keyClick(window, Qt.Key.Key_F, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(window.search_field.hasFocus)

    # Dropping a photo from outside the library searches by it.
    outside = clothing_photos.parent / "outside.jpg"
    outside.write_bytes(Path(first.path).read_bytes())
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(outside))])
    drop = QDropEvent(
        QPointF(QPoint(400, 300)),
        Qt.DropAction.CopyAction,
        mime,
        Qt.MouseButton.LeftButton,
        Qt.KeyboardModifier.NoModifier,
    )
    with qtbot.waitSignal(window.results_shown, timeout=20_000):
        window.dropEvent(drop)
    assert window.history.current == View("image", str(outside))
    assert window.model.refs[0].path == first.path  # the same pixels come first


def test_a_broken_photo_does_not_stop_the_window(
    qtbot: Any, window: MainWindow, services: Clipdesk, clothing_photos: Path
) -> None:
    (clothing_photos / "dress" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    _index(qtbot, window, clothing_photos)
    assert _indexed_count(services) == 60
    assert window.status is not None and len(window.status.failed) == 1
    assert window.model.rowCount() == 60  # browsing lists readable photos only


def test_settings_persist_between_windows(
    qtbot: Any, services: Clipdesk, settings: Any, clothing_photos: Path
) -> None:
    first = MainWindow(services, settings, index_on_start=False)
    qtbot.addWidget(first)
    with qtbot.waitSignal(first.status_refreshed, timeout=10_000):
        first.show()
    first.zoom_slider.setValue(256)
    first.resize(760, 520)  # the offscreen screen is 800 x 600
    first.close()
    second = MainWindow(services, settings, index_on_start=False)
    qtbot.addWidget(second)
    assert second.zoom_slider.value() == 256
    assert second.delegate.side == 256
    assert settings.value("library") == os.fspath(services.library.directory)
    with qtbot.waitSignal(second.status_refreshed, timeout=10_000):
        second.show()
    assert (second.width(), second.height()) == (760, 520)
    second.close()


def test_watched_folders_pick_up_new_and_deleted_photos(
    qtbot: Any, window: MainWindow, services: Clipdesk, clothing_photos: Path
) -> None:
    _index(qtbot, window, clothing_photos)
    assert window.watcher is not None and window.watcher.folders == [str(clothing_photos)]
    extra = sorted((FIXTURES / "clothing-test" / "hat").glob("*.jpg"))[-2:]
    with qtbot.waitSignal(window.job_finished, timeout=JOB_TIMEOUT_MS):
        for photo in extra:  # a new photo appears while the app runs
            shutil.copy(photo, clothing_photos / "hat" / photo.name)
    _settle(qtbot, window)
    assert window.status is not None and window.status.photos == 62
    assert _indexed_count(services) == 62
    with qtbot.waitSignal(window.job_finished, timeout=JOB_TIMEOUT_MS):
        (clothing_photos / "hat" / extra[0].name).unlink()
    _settle(qtbot, window)
    assert window.status is not None and window.status.photos == 61
    assert window.model.rowCount() == 61  # the grid shows the library as it is now


def test_the_first_index_exports_the_model_and_says_so(
    qtbot: Any,
    window: MainWindow,
    clothing_photos: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from clipdesk.models import export_files

    monkeypatch.setenv("CLIPDESK_AUTO_EXPORT", "1")
    monkeypatch.setenv("CLIPDESK_MODELS_DIR", str(tmp_path / "models"))
    from PySide6.QtCore import QTimer

    labels: list[str] = []

    def shown(progress: Any) -> None:  # the label is set right after the signal
        if progress.phase == "export":
            QTimer.singleShot(0, lambda: labels.append(window.job_label.text()))

    window.job_progressed.connect(shown)
    _index(qtbot, window, clothing_photos)
    assert labels[0] == "Preparing fast searches (once per model)…"
    # what it is for (the CLI's start) means nothing in the window: not said there
    assert "command line" not in window.statusBar().currentMessage()
    assert window.job_label.text() == "Library up to date."
    key = window.services.current_spec().key
    assert export_files.find_export(key) is not None
    _search(qtbot, window, "a photo of shoes")  # the window keeps its loaded model
    assert _labels_of_results(window, 1) == ["shoes"]
