"""The review view, driven by the keyboard in the real window (offscreen), with the
trained clothing CLIP: accept, reject, back, undo, progress, bulk accept."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import QItemSelection, QItemSelectionModel, Qt

from clipdesk.gui.main_window import MainWindow
from clipdesk.gui.review import ReviewDialog
from clipdesk.library import tags as tag_rule
from clipdesk.services import Clipdesk
from tests.gui.test_window import JOB_TIMEOUT_MS, _index, _settle, window

__all__ = ["window"]  # the fixture, shared with test_window

LABELS = ["dress", "hat", "shoes", "pants", "shirt"]


def _tagged(qtbot: Any, win: MainWindow, photos: Path) -> None:
    _index(qtbot, win, photos)
    with qtbot.waitSignal(
        win.job_finished, timeout=JOB_TIMEOUT_MS, check_params_cb=lambda k: k == "tag"
    ):
        win.save_and_tag("clothes", LABELS, None, True)
    _settle(qtbot, win)


def _open_review(qtbot: Any, win: MainWindow, label: str) -> ReviewDialog:
    win.sidebar.review_requested.emit("", label)  # a tag's "Review…": the set that has it
    dialog = win.review_dialog
    assert dialog is not None
    qtbot.waitUntil(lambda: dialog.idle and dialog.queue is not None, timeout=30_000)
    return dialog


def _marks(services: Clipdesk, label: str) -> dict[int, str]:
    return tag_rule.marked_photo_ids(services.library, label)


def _written(qtbot: Any, dialog: ReviewDialog) -> None:
    qtbot.waitUntil(lambda: dialog.idle, timeout=10_000)


def test_review_by_keyboard_with_undo_and_progress(
    qtbot: Any, window: MainWindow, services: Clipdesk, photos: Path
) -> None:
    _tagged(qtbot, window, photos)
    dialog = _open_review(qtbot, window, "shoes")
    assert dialog.set_combo.currentText() == "clothes"
    assert dialog.label_combo.currentText() == "shoes"
    items = dialog.items
    total = len(items)
    assert total >= 4
    assert sum(item.given for item in items) >= 3  # the three shoe photos, at least
    assert all("shoes" in Path(item.path).parent.name for item in items[:2])
    assert dialog.progress_label.text() == f"0 of {total} reviewed"
    assert dialog.mark_label.text() == "Not reviewed yet"
    first, second = items[0], items[1]

    qtbot.keyClick(dialog.strip, Qt.Key.Key_Y)  # accept the first: on to the second
    assert dialog.row == 1
    qtbot.keyClick(dialog.strip, Qt.Key.Key_N)  # reject the second: on to the third
    assert dialog.row == 2
    _written(qtbot, dialog)
    marks = _marks(services, "shoes")
    assert marks[first.photo_id] == tag_rule.CONFIRMED
    assert marks[second.photo_id] == tag_rule.REJECTED
    assert dialog.progress_label.text() == f"2 of {total} reviewed"
    tags = services.tags_of([second.photo_id]).get(second.photo_id, [])
    assert "shoes" not in [tag.label for tag in tags]  # rejected: gone from the photo

    qtbot.keyClick(dialog.strip, Qt.Key.Key_Left)  # back to the second
    assert dialog.row == 1
    assert dialog.mark_label.text() == "Rejected by you"
    qtbot.keyClick(dialog.strip, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    _written(qtbot, dialog)
    marks = _marks(services, "shoes")
    assert second.photo_id not in marks  # the rejection is taken back
    assert marks[first.photo_id] == tag_rule.CONFIRMED  # the accept stays
    assert dialog.progress_label.text() == f"1 of {total} reviewed"
    assert dialog.mark_label.text() == "Not reviewed yet"

    # Space skips; Enter accepts as Y does; Delete rejects as N does.
    qtbot.keyClick(dialog.strip, Qt.Key.Key_Space)
    assert dialog.row == 2
    qtbot.keyClick(dialog.strip, Qt.Key.Key_Delete)
    _written(qtbot, dialog)
    assert _marks(services, "shoes")[items[2].photo_id] == tag_rule.REJECTED

    # The window's sidebar and status follow (a refresh after each change).
    with qtbot.waitSignal(window.status_refreshed, timeout=10_000):
        qtbot.keyClick(dialog.strip, Qt.Key.Key_Return)
    _written(qtbot, dialog)
    assert _marks(services, "shoes")[items[3].photo_id] == tag_rule.CONFIRMED

    # Reopened, the queue shows what was said.
    dialog.close()
    _settle(qtbot, window)
    again = _open_review(qtbot, window, "shoes")
    said = {item.photo_id: item.mark for item in again.items}
    assert said[first.photo_id] == tag_rule.CONFIRMED
    assert again.progress_label.text() == f"3 of {len(again.items)} reviewed"
    again.close()
    _settle(qtbot, window)


def test_bulk_accept_of_a_selection_and_its_undo(
    qtbot: Any, window: MainWindow, services: Clipdesk, photos: Path
) -> None:
    _tagged(qtbot, window, photos)
    dialog = _open_review(qtbot, window, "hat")
    dialog.order_combo.setCurrentIndex(dialog.order_combo.findData("least_sure"))
    qtbot.waitUntil(lambda: dialog.idle and dialog.queue.order == "least_sure", timeout=30_000)
    assert len(dialog.items) >= 3
    chosen = dialog.items[:3]
    selection = QItemSelection(dialog.model.index(0), dialog.model.index(2))
    dialog.strip.selectionModel().select(selection, QItemSelectionModel.SelectionFlag.Select)
    assert dialog.accept_button.text() == "Accept 3 selected (Y)"
    qtbot.mouseClick(dialog.accept_button, Qt.MouseButton.LeftButton)
    _written(qtbot, dialog)
    marks = _marks(services, "hat")
    assert all(marks.get(item.photo_id) == tag_rule.CONFIRMED for item in chosen)
    assert dialog.progress_label.text() == f"3 of {len(dialog.items)} reviewed"
    qtbot.mouseClick(dialog.undo_button, Qt.MouseButton.LeftButton)
    _written(qtbot, dialog)
    assert not _marks(services, "hat")
    assert dialog.progress_label.text() == f"0 of {len(dialog.items)} reviewed"
    dialog.close()
    _settle(qtbot, window)
