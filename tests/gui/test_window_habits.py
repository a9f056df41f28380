"""The smaller habits of a photo app: quick look, open, zoom, paste, remove, first-run
download failure, label-set form checks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtGui import QGuiApplication, QImage, QPixmapCache, QWheelEvent
from PySide6.QtWidgets import QDialogButtonBox, QMessageBox

from clipdesk.gui import desktop
from clipdesk.gui.dialogs import LabelSetDialog
from clipdesk.gui.history import View
from clipdesk.gui.main_window import MainWindow
from clipdesk.services import Clipdesk

JOB_TIMEOUT_MS = 120_000


@pytest.fixture()
def indexed_window(
    qtbot: Any, services: Clipdesk, settings: Any, clothing_photos: Path
) -> Iterator[MainWindow]:
    QPixmapCache.clear()
    win = MainWindow(services, settings, index_on_start=False)
    qtbot.addWidget(win)
    win.show()
    with qtbot.waitSignal(win.job_finished, timeout=JOB_TIMEOUT_MS):
        win.add_folders([str(clothing_photos)])
    qtbot.waitUntil(lambda: win.runner.active == 0, timeout=20_000)
    yield win
    win.close()
    assert win.runner.active == 0


def test_space_opens_a_quick_look_that_steps_and_closes(
    qtbot: Any, indexed_window: MainWindow
) -> None:
    win = indexed_window
    win.grid.setFocus()
    qtbot.keyClick(win.grid, Qt.Key.Key_Space)
    dialog = win._quick_look
    assert dialog is not None and dialog.isVisible()
    assert dialog.ref == win.model.refs[0]
    qtbot.waitUntil(lambda: dialog._image is not None, timeout=10_000)
    assert dialog.image_label.pixmap() is not None and not dialog.image_label.pixmap().isNull()
    qtbot.keyClick(dialog, Qt.Key.Key_Right)
    assert dialog.ref == win.model.refs[1] and win.grid.currentIndex().row() == 1
    qtbot.keyClick(dialog, Qt.Key.Key_Space)
    assert not dialog.isVisible()


def test_enter_opens_the_photo_with_the_desktop(
    qtbot: Any, indexed_window: MainWindow, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[str] = []

    def open_file(path: str) -> bool:
        opened.append(path)
        return True

    monkeypatch.setattr(desktop, "open_file", open_file)
    indexed_window.grid.setFocus()
    qtbot.keyClick(indexed_window.grid, Qt.Key.Key_Return)
    assert opened == [indexed_window.model.refs[0].path]


def test_ctrl_wheel_zooms_the_grid(qtbot: Any, indexed_window: MainWindow) -> None:
    win = indexed_window
    before = win.zoom_slider.value()
    viewport = win.grid.viewport()
    wheel = QWheelEvent(
        QPointF(50, 50),
        QPointF(viewport.mapToGlobal(QPoint(50, 50))),
        QPoint(0, 0),
        QPoint(0, 120),
        Qt.MouseButton.NoButton,
        Qt.KeyboardModifier.ControlModifier,
        Qt.ScrollPhase.NoScrollPhase,
        False,
    )
    QGuiApplication.sendEvent(viewport, wheel)
    assert win.zoom_slider.value() > before
    assert win.grid.gridSize().width() == win.delegate.cell_size().width()


def test_pasting_an_image_searches_by_it(qtbot: Any, indexed_window: MainWindow) -> None:
    win = indexed_window
    first = win.model.refs[0]
    QGuiApplication.clipboard().setImage(QImage(first.path))
    win.search_field.setFocus()
    with qtbot.waitSignal(win.results_shown, timeout=20_000):
        qtbot.keyClick(win.search_field, Qt.Key.Key_V, Qt.KeyboardModifier.ControlModifier)
    current = win.history.current
    assert current is not None and current.kind == "image"
    assert Path(current.text).is_relative_to(win.services.library.cache_dir)  # not the photos
    assert win.model.refs[0].path == first.path


def test_removing_a_folder_forgets_it_and_keeps_the_files(
    qtbot: Any, indexed_window: MainWindow, clothing_photos: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    win = indexed_window
    files = sorted(clothing_photos.rglob("*.jpg"))
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.Yes)
    with qtbot.waitSignal(win.status_refreshed, timeout=20_000):
        win.sidebar.remove_folder_requested.emit(str(clothing_photos))
    qtbot.waitUntil(lambda: win.runner.active == 0, timeout=20_000)
    assert win.status is not None and win.status.folders == [] and win.status.photos == 0
    assert win.pages.currentWidget() is win.welcome
    assert sorted(clothing_photos.rglob("*.jpg")) == files


def test_a_failed_download_says_why(
    qtbot: Any, library: Any, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    warnings: list[str] = []
    monkeypatch.setattr(QMessageBox, "warning", lambda _p, _t, text: warnings.append(text))
    win = MainWindow(Clipdesk(library), settings, index_on_start=False)
    qtbot.addWidget(win)
    win.show()
    win.welcome.download_button.click()  # the tests run with HF_HUB_OFFLINE=1
    qtbot.waitUntil(lambda: bool(warnings), timeout=30_000)
    assert "vit-b-32" in warnings[0].lower() or "offline" in warnings[0].lower(), warnings
    # the window's own way to a weights file, not a command line
    assert "clipdesk models" not in warnings[0] and "Import weights file" in warnings[0]
    win.close()


def test_label_set_form_asks_for_a_name_and_labels(qtbot: Any) -> None:
    dialog = LabelSetDialog(["/photos"])
    qtbot.addWidget(dialog)
    save = dialog.run_button
    assert isinstance(save.parent(), QDialogButtonBox)
    save.click()
    assert dialog.result() == 0 and "name" in dialog.error_label.text()
    dialog.name_edit.setText("events")
    save.click()
    assert "label" in dialog.error_label.text()
    dialog.labels_edit.setPlainText("birthday\n\n hiking \nbirthday")
    dialog.scope_combo.setCurrentIndex(1)
    save.click()
    assert dialog.result() == LabelSetDialog.DialogCode.Accepted
    assert dialog.labels == ["birthday", "hiking"] and dialog.folder == "/photos"


def test_tag_filter_carries_into_a_search(qtbot: Any, indexed_window: MainWindow) -> None:
    win = indexed_window
    with qtbot.waitSignal(
        win.job_finished, timeout=JOB_TIMEOUT_MS, check_params_cb=lambda k: k == "tag"
    ):
        win.save_and_tag("clothes", ["dress", "hat", "shoes", "pants"], None, False)
    qtbot.waitUntil(lambda: win.runner.active == 0, timeout=20_000)
    with qtbot.waitSignal(win.results_shown, timeout=20_000):
        win.sidebar.tag_requested.emit("hat")
    hats = {ref.photo_id for ref in win.model.refs}
    win.search_bar.relevant_box.setChecked(False)  # every hat, ranked
    with qtbot.waitSignal(win.results_shown, timeout=20_000):
        qtbot.keyClicks(win.search_field, "something to wear")
    assert win.history.current == View("text", "something to wear", tag="hat", cutoff=False)
    assert {ref.photo_id for ref in win.model.refs} == hats


def test_dropping_a_library_photo_shows_its_neighbours_without_itself(
    qtbot: Any, indexed_window: MainWindow
) -> None:
    win = indexed_window
    photo = win.model.refs[3]
    win.search_bar.relevant_box.setChecked(False)  # every other photo, ranked
    with qtbot.waitSignal(win.results_shown, timeout=20_000):
        win.search_image_file(photo.path)
    ids = [ref.photo_id for ref in win.model.refs]
    assert photo.photo_id not in ids and len(ids) == 59


def test_importing_an_exported_model_makes_it_the_model(
    qtbot: Any,
    library: Any,
    settings: Any,
    clothing_export: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As in the CPU bundle: no torch, no model yet; File → Import exported model…"""
    from PySide6.QtWidgets import QFileDialog

    monkeypatch.setenv("CLIPDESK_NO_TORCH", "1")
    monkeypatch.setenv("CLIPDESK_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *a, **k: str(clothing_export))
    win = MainWindow(Clipdesk(library), settings, index_on_start=False)
    qtbot.addWidget(win)
    win.show()
    qtbot.waitUntil(lambda: win.status is not None, timeout=20_000)
    assert not win.welcome.download_button.isVisible()  # needs torch: not offered
    assert win.welcome.import_button.text() == "Import exported model…"
    win.welcome.import_button.click()
    qtbot.waitUntil(lambda: win.status is not None and win.status.model is not None, timeout=30_000)
    assert win.status.model.startswith("clothing-clip:")
    assert (tmp_path / "models" / "exports" / clothing_export.name).is_dir()
    win.close()
