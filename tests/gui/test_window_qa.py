"""What an exploratory pass through the window found, each kept fixed: long texts that
widened the window, errors that never left the status bar, unreadable files counted one
way in the sidebar and another in the grid, results found mid-index that were never
searched again, and smaller habits."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QImage, QPixmapCache
from PySide6.QtWidgets import QLabel, QMessageBox

from clipdesk.gui.dialogs import UnreadableDialog
from clipdesk.gui.history import View
from clipdesk.gui.main_window import MainWindow
from clipdesk.services import Clipdesk
from tests.helpers import make_bad_files

JOB_TIMEOUT_MS = 120_000


@pytest.fixture()
def window(qtbot: Any, services: Clipdesk, settings: Any) -> Iterator[MainWindow]:
    QPixmapCache.clear()
    win = MainWindow(services, settings, index_on_start=False)
    qtbot.addWidget(win)
    win.resize(900, 560)
    with qtbot.waitSignal(win.status_refreshed, timeout=10_000):
        win.show()
    yield win
    win.close()
    assert win.runner.active == 0 and win.job_runner.active == 0


def _index(qtbot: Any, win: MainWindow, folder: Path) -> None:
    with qtbot.waitSignal(
        win.job_finished, timeout=JOB_TIMEOUT_MS, check_params_cb=lambda kind: kind == "index"
    ):
        win.add_folders([str(folder)])
    qtbot.waitUntil(lambda: win.runner.active == 0, timeout=20_000)


def test_long_texts_never_widen_the_window(
    qtbot: Any, window: MainWindow, clothing_photos: Path
) -> None:
    _index(qtbot, window, clothing_photos)
    width = window.width()
    query = "a dress " * 200
    with qtbot.waitSignal(window.results_shown, timeout=20_000):
        window.search_field.setText(query)
        window.search_field.returnPressed.emit()
    window.show_error("No application could open " + "/very/long/path" * 40 + ".jpg")
    qtbot.wait(50)
    assert window.width() == width
    assert window.header_label.text().startswith("“a dress a dress")  # whole, for tests
    assert "…" in window.header_label.fontMetrics().elidedText(
        window.header_label.text(), Qt.TextElideMode.ElideRight, window.header_label.width()
    )


def test_an_error_leaves_the_status_bar_and_not_the_job_line(
    qtbot: Any, window: MainWindow, clothing_photos: Path
) -> None:
    _index(qtbot, window, clothing_photos)
    window.show_error("Could not open the folder of /somewhere")
    assert window.statusBar().currentMessage() == "Could not open the folder of /somewhere"
    assert window.job_label.text() == "Library up to date."  # back when the message goes


def test_unreadable_files_are_counted_apart_and_listed_with_reasons(
    qtbot: Any, window: MainWindow, clothing_photos: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = make_bad_files(clothing_photos / "bad", next(clothing_photos.rglob("*.jpg")))
    _index(qtbot, window, clothing_photos)
    assert window.status is not None and len(window.status.failed) == len(expected)
    library = window.sidebar.tree.topLevelItem(0)
    assert library is not None
    assert library.child(0).text(0) == "All photos (60)"  # as the grid counts them
    assert window.model.rowCount() == 60
    unreadable = library.child(1)
    assert unreadable is not None
    assert not unreadable.isHidden()
    assert unreadable.text(0) == f"Could not be read ({len(expected)})"
    folders = window.sidebar.tree.topLevelItem(1)
    assert folders is not None
    assert folders.child(0).text(0).endswith(f"(60 photos, {len(expected)} unreadable)")
    assert f"{len(expected)} files could not be read" in window.job_label.text()

    opened: list[UnreadableDialog] = []
    monkeypatch.setattr(UnreadableDialog, "open", lambda self: opened.append(self))
    window.sidebar._clicked(unreadable)
    (dialog,) = opened
    rows = {
        dialog.table.topLevelItem(i).text(0): dialog.table.topLevelItem(i).text(1)
        for i in range(dialog.table.topLevelItemCount())
    }
    assert set(rows) == set(expected)
    for name, part in expected.items():
        assert part in rows[name]


def test_a_search_made_while_indexing_says_so_and_runs_again_at_the_end(
    qtbot: Any, window: MainWindow, clothing_photos: Path
) -> None:
    _index(qtbot, window, clothing_photos)
    running = SimpleNamespace(token=SimpleNamespace(cancelled=False), paused=False)
    window.job, window.job_kind = running, "index"  # type: ignore[assignment]
    with qtbot.waitSignal(window.results_shown, timeout=20_000):
        window.navigate(View("text", "a photo of shoes"))
    assert window.header_label.text().endswith("indexing: among the photos indexed so far")
    with qtbot.waitSignal(window.results_shown, timeout=20_000):
        window._job_finished()  # the index job ends: the same search, on everything
    kept = window.model.rowCount()  # the relevance cutoff is on by default
    assert window.header_label.text() == (
        f"“a photo of shoes”: {kept} relevant photos, best match first"
    )
    assert window.history.current == View("text", "a photo of shoes")


def test_down_from_the_search_field_goes_to_the_results(
    qtbot: Any, window: MainWindow, clothing_photos: Path
) -> None:
    _index(qtbot, window, clothing_photos)
    window.search_field.setFocus()
    qtbot.keyClick(window.search_field, Qt.Key.Key_Down)
    assert window.grid.hasFocus()
    assert window.grid.currentIndex().row() == 0


def test_removing_a_folder_during_a_job_says_wait_before_asking(
    window: MainWindow, clothing_photos: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def asked(*_args: object) -> None:
        raise AssertionError("asked to confirm a removal that cannot happen now")

    monkeypatch.setattr(QMessageBox, "question", asked)
    window.job = SimpleNamespace(token=SimpleNamespace(cancelled=False))  # type: ignore[assignment]
    window.remove_folder(str(clothing_photos))
    window.job = None
    assert window.statusBar().currentMessage().startswith("Wait for the current job")


def test_a_pasted_image_has_a_plain_name_and_is_gone_after_the_window(
    qtbot: Any, window: MainWindow, clothing_photos: Path
) -> None:
    _index(qtbot, window, clothing_photos)
    with qtbot.waitSignal(window.results_shown, timeout=20_000):
        window._image_pasted(QImage(str(next(clothing_photos.rglob("*.jpg")))))
    assert "that look like pasted image " in window.header_label.text()
    pasted = window.services.library.cache_dir / "pasted"
    assert len(list(pasted.glob("*.png"))) == 1
    window.close()
    assert list(pasted.glob("*.png")) == []


def test_a_folder_without_a_model_shows_the_step_that_is_left(
    qtbot: Any, library: Any, settings: Any, clothing_photos: Path
) -> None:
    win = MainWindow(Clipdesk(library), settings, index_on_start=False)
    qtbot.addWidget(win)
    with qtbot.waitSignal(win.status_refreshed, timeout=10_000):
        win.show()
    assert win.welcome.title.text() == "Welcome to clipdesk"
    with qtbot.waitSignal(win.status_refreshed, timeout=20_000):
        win.add_folders([str(clothing_photos)])
    qtbot.waitUntil(lambda: win.welcome.title.text() == "One more step", timeout=20_000)
    assert win.pages.currentWidget() is win.welcome
    assert "is added" in win.welcome.text.text()
    assert win.welcome.model_box.isVisible()
    win.close()


def test_a_folder_without_a_model_shows_its_photos(
    qtbot: Any, library: Any, settings: Any, clothing_photos: Path
) -> None:
    """Issue 17: an added folder was "0 photos" until there was a model."""
    win = MainWindow(Clipdesk(library), settings, index_on_start=False)
    qtbot.addWidget(win)
    with qtbot.waitSignal(win.status_refreshed, timeout=10_000):
        win.show()
    with qtbot.waitSignal(win.job_finished, timeout=30_000, check_params_cb=lambda k: k == "scan"):
        win.add_folders([str(clothing_photos)])
    assert win.status is not None and win.status.model is None
    assert win.status.photos == win.status.folders[0].photos == 60
    assert win.pages.currentWidget() is win.welcome  # the step that is left, in view
    assert "60 photos found" in win.welcome.text.text()
    assert "60 photos found" in win.job_label.text()
    with qtbot.waitSignal(win.results_shown, timeout=20_000):
        win.navigate(View("all"))
    assert win.model.rowCount() == 60
    win.close()


def test_the_models_name_stays_readable_in_the_status_bar(
    qtbot: Any, window: MainWindow, clothing_photos: Path
) -> None:
    """It was squeezed to 2 px (an empty text) from the first status on, and never grew."""
    _index(qtbot, window, clothing_photos)
    label = window.model_label
    assert label.text().startswith("Model: ")
    qtbot.waitUntil(lambda: label.width() >= 200, timeout=5_000)
    shown = QLabel.text(label)  # what is drawn: the whole text, or its start and "…"
    assert shown.startswith("Model: ") and len(shown) >= 20
    window.show_error("Could not open " + "/a/long/path" * 30 + ".jpg")
    qtbot.wait(50)
    assert label.width() >= 200  # an error beside it leaves it be
