"""Tags by hand in the real window (offscreen): add to a multi-selection with completion
from the library's tags, undo, remove; the details panel follows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import QItemSelection, QItemSelectionModel, Qt
from PySide6.QtWidgets import QApplication, QDialogButtonBox, QMenu

from clipdesk.gui.main_window import MainWindow
from clipdesk.gui.tag_actions import AddTagDialog, RemoveTagDialog
from clipdesk.library import tags as tag_rule
from clipdesk.services import Clipdesk
from tests.gui.test_window import _index, _settle, window

__all__ = ["window"]  # the fixture, shared with test_window


def _labels(services: Clipdesk, photo_id: int) -> dict[str, str]:
    return {t.label: t.source for t in services.tags_of([photo_id]).get(photo_id, [])}


def _select(win: MainWindow, first: int, last: int) -> None:
    selection = QItemSelection(win.model.index(first), win.model.index(last))
    win.grid.setCurrentIndex(win.model.index(first))
    win.grid.selectionModel().select(selection, QItemSelectionModel.SelectionFlag.Select)


def _press_ok(qtbot: Any, dialog: AddTagDialog | RemoveTagDialog) -> None:
    ok = dialog.buttons.button(QDialogButtonBox.StandardButton.Ok)
    assert ok.isEnabled()
    qtbot.mouseClick(ok, Qt.MouseButton.LeftButton)


def test_add_with_completion_undo_and_remove_on_a_multi_selection(
    qtbot: Any, window: MainWindow, services: Clipdesk, photos: Path
) -> None:
    _index(qtbot, window, photos)
    services.create_label_set("clothes", ["dress", "shoes"])
    refs = window.model.refs
    services.mark_tag("beach holiday", [refs[0].photo_id], tag_rule.MANUAL)
    _select(window, 0, 2)
    chosen = [ref.photo_id for ref in window.grid.selected_refs()]
    assert len(chosen) == 3

    # T on the grid: the dialog, with completion from the library's tags.
    window.grid.setFocus()
    qtbot.keyClick(window.grid, Qt.Key.Key_T)
    qtbot.waitUntil(lambda: isinstance(window.tag_dialog, AddTagDialog), timeout=10_000)
    dialog = window.tag_dialog
    assert isinstance(dialog, AddTagDialog)
    completions = dialog.completer.model()
    known = [completions.index(i, 0).data() for i in range(completions.rowCount())]
    assert known == ["beach holiday", "dress", "shoes"]
    dialog.completer.setCompletionPrefix("HOLI")  # any part of the name, any case
    assert dialog.completer.completionCount() == 1
    assert dialog.completer.currentCompletion() == "beach holiday"
    assert not dialog.buttons.button(QDialogButtonBox.StandardButton.Ok).isEnabled()
    qtbot.keyClicks(dialog.name_edit, "  red   scarf ")
    _press_ok(qtbot, dialog)
    qtbot.waitUntil(lambda: bool(window.tag_undo), timeout=10_000)
    _settle(qtbot, window)
    for pid in chosen:
        assert _labels(services, pid)["red scarf"] == tag_rule.MANUAL
    assert "red scarf (added by you)" in window.details.fields["Tags"].text()
    assert "“red scarf”" in window.statusBar().currentMessage()

    # Ctrl+Z in the window takes it off all three again.
    # (offscreen, the completer's hidden popup stays the active window: back to the window)
    window.activateWindow()
    window.grid.setFocus()
    qtbot.waitUntil(lambda: QApplication.activeWindow() is window, timeout=5_000)
    qtbot.keyClick(window.grid, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(lambda: "red scarf" not in _labels(services, chosen[1]), timeout=10_000)
    _settle(qtbot, window)
    assert all("red scarf" not in _labels(services, pid) for pid in chosen)
    assert "red scarf" not in window.details.fields["Tags"].text()
    assert not window.undo_tag_action.isEnabled()

    # Shift+T: the selection's tags with their counts; the checked one goes.
    qtbot.keyClick(window.grid, Qt.Key.Key_T, Qt.KeyboardModifier.ShiftModifier)
    qtbot.waitUntil(lambda: isinstance(window.tag_dialog, RemoveTagDialog), timeout=10_000)
    remove = window.tag_dialog
    assert isinstance(remove, RemoveTagDialog)
    rows = [remove.list.item(i).text() for i in range(remove.list.count())]
    assert rows == ["beach holiday  (1 of 3)"]
    assert remove.names == ["beach holiday"]  # the only one: checked already
    _press_ok(qtbot, remove)
    qtbot.waitUntil(lambda: "beach holiday" not in _labels(services, chosen[0]), timeout=10_000)
    _settle(qtbot, window)
    # A removed tag stays off: the mark says so, by content.
    assert tag_rule.marked_photo_ids(services.library, "beach holiday") == {
        chosen[0]: tag_rule.REJECTED
    }


def test_tag_actions_need_a_selection(qtbot: Any, window: MainWindow) -> None:
    window.add_tag_to_selected()  # an empty library: nothing selected
    assert window.tag_dialog is None
    assert "Select one or more photos" in window.statusBar().currentMessage()


def test_the_menus_shortcuts_are_each_for_one_action(window: MainWindow) -> None:
    seen: dict[str, str] = {}
    for menu_action in window.menuBar().actions():
        menu = menu_action.menu()
        for action in menu.actions() if isinstance(menu, QMenu) else []:
            for key in action.shortcuts():
                text = key.toString()
                assert text not in seen, f"{text}: {seen[text]} and {action.text()}"
                seen[text] = action.text()
    assert seen["T"] == "&Add tag to selected…" and seen["Ctrl+Shift+R"] == "&Review tags…"
