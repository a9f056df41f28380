"""Smart albums in the window: the sidebar's Albums section with counts that follow the
watched folders, an album shown in the grid, saving the search shown, deleting one."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QPixmapCache
from PySide6.QtWidgets import QInputDialog, QMessageBox, QTreeWidgetItem

from clipdesk.gui.main_window import MainWindow
from clipdesk.gui.sidebar import KIND_ROLE, VALUE_ROLE
from clipdesk.services import Clipdesk
from tests.helpers import FIXTURES

JOB_TIMEOUT_MS = 120_000


@pytest.fixture()
def window(qtbot: Any, services: Clipdesk, settings: Any) -> Iterator[MainWindow]:
    QPixmapCache.clear()
    win = MainWindow(services, settings, index_on_start=False)
    qtbot.addWidget(win)
    with qtbot.waitSignal(win.status_refreshed, timeout=10_000):
        win.show()
    yield win
    win.close()
    assert win.runner.active == 0 and win.job_runner.active == 0, "a worker outlived the window"


def _settle(qtbot: Any, win: MainWindow) -> None:
    qtbot.waitUntil(lambda: win.runner.active == 0, timeout=20_000)


def _index(qtbot: Any, win: MainWindow, folder: Path) -> None:
    with qtbot.waitSignal(
        win.job_finished, timeout=JOB_TIMEOUT_MS, check_params_cb=lambda kind: kind == "index"
    ):
        win.add_folders([str(folder)])
    _settle(qtbot, win)


def _album_items(win: MainWindow) -> dict[str, QTreeWidgetItem]:
    tree = win.sidebar.tree
    section = next(
        tree.topLevelItem(i)
        for i in range(tree.topLevelItemCount())
        if tree.topLevelItem(i).text(0) == "Albums"
    )
    assert section is not None
    items = [section.child(i) for i in range(section.childCount())]
    return {
        item.data(0, VALUE_ROLE): item
        for item in items
        if item is not None and item.data(0, KIND_ROLE) == "album"
    }


def _album_text(win: MainWindow, name: str) -> str | None:
    item = _album_items(win).get(name)
    return None if item is None else item.text(0)


def test_an_album_in_the_sidebar_grows_as_a_watched_folder_gets_photos(
    qtbot: Any,
    window: MainWindow,
    services: Clipdesk,
    clothing_photos: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _index(qtbot, window, clothing_photos)
    services.save_album("Hats", "a photo of a hat in:hat", cutoff=False, k=100)
    window.refresh_status()
    qtbot.waitUntil(lambda: _album_text(window, "Hats") == "Hats  (6)", timeout=20_000)

    # a new photo lands in the watched folder: indexed, and the album counts it
    extra = sorted((FIXTURES / "clothing-test" / "hat").glob("*.jpg"))[-2:]
    with qtbot.waitSignal(window.job_finished, timeout=JOB_TIMEOUT_MS):
        for photo in extra:
            shutil.copy(photo, clothing_photos / "hat" / photo.name)
    _settle(qtbot, window)
    qtbot.waitUntil(lambda: _album_text(window, "Hats") == "Hats  (8)", timeout=20_000)

    # a click shows the album's photos in the grid
    item = _album_items(window)["Hats"]
    tree = window.sidebar.tree
    with qtbot.waitSignal(window.results_shown, timeout=20_000):
        qtbot.mouseClick(
            tree.viewport(), Qt.MouseButton.LeftButton, pos=tree.visualItemRect(item).center()
        )
    assert window.model.rowCount() == 8
    assert {Path(ref.path).parent.name for ref in window.model.refs} == {"hat"}
    assert window.header_label.text().startswith("Album “Hats”: 8 photos")

    # deleted from its context menu, after a confirmation; the grid leaves it
    asked: list[str] = []

    def confirm(*args: Any) -> QMessageBox.StandardButton:
        asked.append(str(args[2]))
        return QMessageBox.StandardButton.Yes

    monkeypatch.setattr(QMessageBox, "question", confirm)
    window.sidebar._confirm_delete_album("Hats")
    assert asked and "Hats" in asked[0]
    qtbot.waitUntil(lambda: _album_items(window) == {}, timeout=20_000)
    _settle(qtbot, window)
    assert services.albums() == []
    assert window.history.current is not None and window.history.current.kind == "all"


def test_the_search_shown_is_saved_as_an_album(
    qtbot: Any,
    window: MainWindow,
    services: Clipdesk,
    clothing_photos: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _index(qtbot, window, clothing_photos)
    with qtbot.waitSignal(window.results_shown, timeout=20_000):
        window.search_field.setFocus()
        qtbot.keyClicks(window.search_field, "a photo of shoes")
    shown = window.model.rowCount()
    monkeypatch.setattr(
        QInputDialog, "getText", lambda *args, **kwargs: ("Shoes", True), raising=True
    )
    window.save_search_as_album()
    qtbot.waitUntil(lambda: "Shoes" in _album_items(window), timeout=20_000)
    (entry,) = services.albums()
    assert entry.album.query == "a photo of shoes"
    assert entry.album.cutoff == window.history.current.cutoff
    assert _album_text(window, "Shoes") == f"Shoes  ({entry.count:,})"
    with qtbot.waitSignal(window.results_shown, timeout=20_000):
        window.show_album("Shoes")
    assert window.model.rowCount() == entry.count == shown  # the same search, the same photos
