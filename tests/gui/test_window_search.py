"""The window's search: the typed syntax through Clipdesk.search, filter chips kept in step
with the text, the sort order, the "Relevant only" cutoff and its empty state, "More like
these" from a multi-selection, and mistakes said beside the field."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import QItemSelectionModel, Qt
from PySide6.QtGui import QPixmapCache
from PySide6.QtWidgets import QMenu

from clipdesk.gui.chips import Chip, filter_chips, text_without_chip
from clipdesk.gui.main_window import MainWindow
from clipdesk.search.query import parse_query
from clipdesk.services import Clipdesk

JOB_TIMEOUT_MS = 120_000
DAY = 86_400.0


def _spread_dates(folder: Path) -> None:
    """Each photo a day apart (file dates are their "taken" dates: no EXIF dates here),
    in an order unrelated to the folders, so a date sort is no accident of the names."""
    photos = sorted(folder.rglob("*.jpg"), key=lambda p: p.name[::-1])
    for number, photo in enumerate(photos):
        when = 1_600_000_000 + number * DAY
        os.utime(photo, (when, when))


@pytest.fixture()
def window(
    qtbot: Any, services: Clipdesk, settings: Any, clothing_photos: Path
) -> Iterator[MainWindow]:
    QPixmapCache.clear()
    _spread_dates(clothing_photos)
    win = MainWindow(services, settings, index_on_start=False)
    qtbot.addWidget(win)
    win.show()
    with qtbot.waitSignal(
        win.job_finished, timeout=JOB_TIMEOUT_MS, check_params_cb=lambda k: k == "index"
    ):
        win.add_folders([str(clothing_photos)])
    qtbot.waitUntil(lambda: win.runner.active == 0, timeout=20_000)
    yield win
    win.close()
    assert win.runner.active == 0


def _search(qtbot: Any, win: MainWindow, text: str) -> None:
    with qtbot.waitSignal(win.results_shown, timeout=20_000):
        win.search_field.setFocus()
        win.search_field.selectAll()
        qtbot.keyClicks(win.search_field, text)


def _chip_labels(win: MainWindow) -> list[str]:
    return [chip.label.text() for chip in win.search_bar.chips]


def _folders(win: MainWindow) -> set[str]:
    return {Path(ref.path).parent.name for ref in win.model.refs}


def test_chips_show_the_typed_filters_and_removing_one_rewrites_the_text(
    qtbot: Any, window: MainWindow
) -> None:
    win = window
    _search(qtbot, win, "a photo of shoes in:shoes type:jpg")
    assert _chip_labels(win) == ["in shoes", "JPG"]
    assert win.search_bar.chips[0].isVisible()
    assert _folders(win) <= {"shoes"}

    # The x of the folder's chip: the text loses in:shoes and the search runs again.
    with qtbot.waitSignal(win.results_shown, timeout=20_000):
        qtbot.mouseClick(win.search_bar.chips[0].close_button, Qt.MouseButton.LeftButton)
    assert win.search_field.text() == "a photo of shoes type:jpg"
    assert _chip_labels(win) == ["JPG"]
    assert win.history.current is not None
    assert win.history.current.text == "a photo of shoes type:jpg"

    # Backspace on a focused chip removes it too.
    win.search_bar.chips[0].setFocus()
    qtbot.waitUntil(win.search_bar.chips[0].hasFocus)
    with qtbot.waitSignal(win.results_shown, timeout=20_000):
        qtbot.keyClick(win.search_bar.chips[0], Qt.Key.Key_Backspace)
    assert win.search_field.text() == "a photo of shoes"
    assert _chip_labels(win) == []


def _menu_action(win: MainWindow, submenu: str, name: str) -> Any:
    for action in win.search_bar.add_menu.actions():
        menu = action.menu()
        if action.text() == submenu and isinstance(menu, QMenu):
            return next(a for a in menu.actions() if a.text() == name)
    raise AssertionError(f"no {submenu} → {name} in the Add filter menu")


def test_add_filter_writes_the_filter_into_the_text(qtbot: Any, window: MainWindow) -> None:
    win = window
    _search(qtbot, win, "a red dress orientation:portrait")
    win.search_bar.add_menu.aboutToShow.emit()  # fills the menu as opening it does
    with qtbot.waitSignal(win.results_shown, timeout=20_000):
        _menu_action(win, "Orientation", "Landscape").trigger()
    with qtbot.waitSignal(win.results_shown, timeout=20_000):
        _menu_action(win, "File type", "PNG").trigger()
    # an orientation replaces the one there; a type adds to the text
    assert parse_query(win.search_field.text()) == parse_query(
        "a red dress type:png orientation:landscape"
    )
    assert set(_chip_labels(win)) == {"PNG", "landscape"}


def test_newest_first_sorts_the_relevant_photos_by_date(qtbot: Any, window: MainWindow) -> None:
    win = window
    _search(qtbot, win, "a photo of shoes")
    by_score = [ref.photo_id for ref in win.model.refs]
    assert len(by_score) >= 3
    with qtbot.waitSignal(win.results_shown, timeout=20_000):
        win.search_bar.sort_combo.setCurrentIndex(win.search_bar.sort_combo.findData("newest"))
    dates = [ref.taken_at for ref in win.model.refs]
    assert dates == sorted(dates, reverse=True) and len(set(dates)) == len(dates)
    assert sorted(ref.photo_id for ref in win.model.refs) == sorted(by_score)
    assert win.header_label.text().endswith("newest first")
    assert win.history.current is not None and win.history.current.sort == "newest"

    with qtbot.waitSignal(win.results_shown, timeout=20_000):
        win.search_bar.sort_combo.setCurrentIndex(win.search_bar.sort_combo.findData("oldest"))
    dates = [ref.taken_at for ref in win.model.refs]
    assert dates == sorted(dates)


def test_relevant_only_cuts_says_how_many_and_is_remembered(
    qtbot: Any, window: MainWindow, services: Clipdesk, settings: Any
) -> None:
    win = window
    assert win.search_bar.relevant_box.isChecked()  # on by default
    _search(qtbot, win, "a photo of shoes")
    kept = win.model.rowCount()
    assert 0 < kept < 60
    assert win.search_summary == f"{kept} relevant of 60 looked at"
    assert win.statusBar().currentMessage() == win.search_summary

    with qtbot.waitSignal(win.results_shown, timeout=20_000):
        win.search_bar.relevant_box.setChecked(False)
    assert win.model.rowCount() == 60
    assert win.search_summary == ""
    assert str(settings.value("search/relevant_only")) == "false"

    second = MainWindow(services, settings, index_on_start=False)
    qtbot.addWidget(second)
    assert not second.search_bar.relevant_box.isChecked()
    second.close()


def test_a_query_nothing_matches_shows_no_photo_matches(qtbot: Any, window: MainWindow) -> None:
    win = window
    _search(qtbot, win, "a bowl of soup")
    assert win.model.rowCount() == 0
    assert not win.grid.isVisible()
    assert win.empty_label.isVisible()
    assert win.empty_label.text().startswith("No photo matches “a bowl of soup”")
    assert "Relevant only" in win.empty_label.text()
    assert win.search_summary == "0 relevant of 60 looked at"


def test_more_like_these_searches_by_the_selected_photos_without_them(
    qtbot: Any, window: MainWindow
) -> None:
    win = window
    win.search_bar.relevant_box.setChecked(False)  # all 57 others, to see none is missing
    _search(qtbot, win, "a photo of shoes")
    selection = win.grid.selectionModel()
    selection.clearSelection()
    for row in range(3):
        selection.select(win.model.index(row), QItemSelectionModel.SelectionFlag.Select)
    chosen = {ref.photo_id for ref in win.grid.selected_refs()}
    assert len(chosen) == 3
    win.grid.setFocus()
    with qtbot.waitSignal(win.results_shown, timeout=20_000):
        qtbot.keyClick(
            win.grid,
            Qt.Key.Key_F,
            Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier,
        )
    current = win.history.current
    assert current is not None and current.kind == "like" and len(current.refs) == 3
    shown = [ref.photo_id for ref in win.model.refs]
    assert len(shown) == 57 and not chosen & set(shown)
    nearest = [Path(ref.path).parent.name for ref in win.model.refs[:3]]
    assert nearest.count("shoes") >= 2, nearest
    assert win.header_label.text().startswith("57 photos like these 3")
    assert win.search_field.text() == ""


def test_a_bad_date_is_said_beside_the_field_and_the_results_stay(
    qtbot: Any, window: MainWindow
) -> None:
    win = window
    _search(qtbot, win, "a photo of shoes")
    before = [ref.photo_id for ref in win.model.refs]
    win.search_field.setText("a photo of shoes after:2023-13")
    win.search_field.returnPressed.emit()
    qtbot.waitUntil(win.search_bar.message_label.isVisible)
    message = win.search_bar.message_label.text()
    assert "after:2023-13" in message and "month 13" in message
    assert "Traceback" not in message
    assert [ref.photo_id for ref in win.model.refs] == before

    # A filter the library cannot answer: said where the results would be.
    with qtbot.waitSignal(win.results_shown, timeout=20_000):
        win.search_field.setText("a photo of shoes in:Nowhere")
        win.search_field.returnPressed.emit()
    assert not win.search_bar.message_label.isVisible()
    assert win.empty_label.isVisible()
    assert "no folder named 'Nowhere'" in win.empty_label.text()


def test_chips_without_qt_follow_format_query() -> None:
    parsed = parse_query('beach -people in:"Summer 2023" after:2023-07 before:2023-08 tag:family')
    chips = filter_chips(parsed.filters)
    assert [c.label for c in chips] == [
        "in Summer 2023",
        "tag family",
        "from 2023-07",
        "before 2023-08",
    ]
    assert text_without_chip(parsed, chips[0]) == (
        "beach -people tag:family after:2023-07 before:2023-08"
    )
    assert text_without_chip(parsed, Chip("before", None, "")) == (
        'beach -people in:"Summer 2023" tag:family after:2023-07'
    )
