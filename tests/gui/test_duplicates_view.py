"""The duplicates view in the real window (offscreen), on a library of the fixture photos
with planted copies and edits, indexed with the trained clothing CLIP: the groups and the
suggestion shown, the keyboard, the slider regrouping, and the trash only after a yes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QMenu, QMessageBox

from clipdesk.gui.duplicates_view import DuplicatesDialog, open_duplicates
from clipdesk.gui.main_window import MainWindow
from clipdesk.services import Clipdesk
from tests.gui.test_window import _index, window
from tests.unit.test_duplicates import plant

__all__ = ["window"]  # the fixture, shared with test_window

SHOTS = Path(os.environ.get("CLIPDESK_SHOTS", "/tmp/r/shots"))


@pytest.fixture()
def trash_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The freedesktop trash for this test: $XDG_DATA_HOME/Trash on the photos' drive
    (send2trash reads the variable when first imported, so its module is told too)."""
    data = tmp_path / "data"
    (tmp_path / "home").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_DATA_HOME", str(data))
    from send2trash import plat_other  # the test's own trash, whenever it was imported

    monkeypatch.setattr(plat_other, "XDG_DATA_HOME", os.fsencode(data))
    monkeypatch.setattr(plat_other, "HOMETRASH_B", os.fsencode(data / "Trash"))
    monkeypatch.setattr(plat_other, "HOMETRASH", str(data / "Trash"))
    return data / "Trash"


def _open(
    qtbot: Any, win: MainWindow, photos: Path
) -> tuple[DuplicatesDialog, dict[Path, set[Path]]]:
    planted = plant(photos)
    _index(qtbot, win, photos)
    (find,) = [
        action
        for menu in win.menuBar().findChildren(QMenu)
        for action in menu.actions()
        if action.text() == "Find &duplicates…"
    ]
    assert find.shortcut().toString() == "Ctrl+Shift+D"
    find.trigger()  # Tools > Find duplicates…
    dialog = win.duplicates_dialog
    assert dialog is not None and dialog.isVisible()
    qtbot.waitUntil(lambda: dialog.idle and dialog.report is not None, timeout=60_000)
    return dialog, planted


def _shown_paths(dialog: DuplicatesDialog) -> list[set[Path]]:
    return [{Path(m.path) for m in g.members} for g in dialog.groups]


def _files(photos: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in photos.rglob("*.jpg")}


def _thumbnails_shown(dialog: DuplicatesDialog) -> bool:
    return all(not c.thumb.pixmap().isNull() for c in dialog._cards)


def _shot(dialog: DuplicatesDialog, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    dialog.grab().save(str(SHOTS / name))


def test_the_planted_groups_are_shown_with_the_larger_original_to_keep(
    qtbot: Any, window: MainWindow, photos: Path
) -> None:
    dialog, planted = _open(qtbot, window, photos)
    assert sorted(map(sorted, _shown_paths(dialog))) == sorted(
        sorted({original} | copies) for original, copies in planted.items()
    )
    assert dialog.group_list.count() == 3
    for group in dialog.groups:
        assert Path(group.kept.path) in planted  # the original, not a copy or an edit
        assert dialog.kept_ids(group) == [group.kept.photo_id]
    # the dress's group: the original, its byte copy and a half-size copy
    dress = next(g for g in dialog.groups if len(g.members) == 3)
    dialog.group_list.setCurrentRow(dialog.groups.index(dress))
    cards = dialog._cards
    assert [c.keep_check.isChecked() for c in cards] == [True, False, False]
    assert "exact copy" in cards[1].facts.text()
    facts = {Path(c.member.path): c.facts.text() for c in cards}
    small = photos / "edits" / "small.jpg"
    w, h = dress.kept.facts.width, dress.kept.facts.height
    assert w is not None and h is not None
    # what differs from the suggested photo is in bold under the other
    assert f"Pixels: {w} × {h}" in facts[Path(dress.kept.path)]
    assert f"Pixels: <b>{w // 2} × {h // 2}" in facts[small]
    assert f"Pixels: {w} × {h}" in cards[1].facts.text()  # the byte copy: the same
    assert [c.badge.text() for c in cards] == ["★ suggested", "to the trash", "to the trash"]
    extra = sum(len(copies) for copies in planted.values())
    assert dialog.summary.text().startswith(f"3 groups · {extra} photos not kept · ")
    assert dialog.summary.text().endswith(" to free")
    qtbot.waitUntil(lambda: _thumbnails_shown(dialog))
    _shot(dialog, "dups-groups.png")


def test_the_keyboard_moves_and_flips_the_choice(
    qtbot: Any, window: MainWindow, photos: Path
) -> None:
    dialog, _ = _open(qtbot, window, photos)
    assert dialog.group_row == 0
    qtbot.keyClick(dialog, Qt.Key.Key_J)
    assert dialog.group_row == 1
    qtbot.keyClick(dialog, Qt.Key.Key_Down)
    assert dialog.group_row == 2
    qtbot.keyClick(dialog, Qt.Key.Key_K)
    qtbot.keyClick(dialog, Qt.Key.Key_Up)
    assert dialog.group_row == 0
    group = dialog.groups[0]
    first, second = group.members[0], group.members[1]
    before = dialog.summary.text()
    qtbot.keyClick(dialog, Qt.Key.Key_Right)
    assert dialog.photo_row == 1
    qtbot.keyClick(dialog, Qt.Key.Key_Space)  # keep the second too
    assert dialog.kept_ids(group) == [first.photo_id, second.photo_id]
    assert dialog._cards[1].keep_check.isChecked()
    assert dialog.summary.text() != before
    qtbot.keyClick(dialog, Qt.Key.Key_Left)
    qtbot.keyClick(dialog, Qt.Key.Key_Space)  # drop the suggested one: the second stays
    assert dialog.kept_ids(group) == [second.photo_id]
    qtbot.keyClick(dialog, Qt.Key.Key_Right)
    qtbot.keyClick(dialog, Qt.Key.Key_Space)  # the last kept: refused
    assert dialog.kept_ids(group) == [second.photo_id]
    assert "at least one" in dialog.summary.text()
    qtbot.keyClick(dialog, Qt.Key.Key_A)  # keep all
    assert dialog.kept_ids(group) == [m.photo_id for m in group.members]
    assert group.freed(dialog.kept_ids(group)) == 0
    assert dialog.row_layout.count() == len(group.members)  # only this group's photos
    assert all(c.keep_check.isChecked() and c.badge.text() != "to the trash" for c in dialog._cards)
    assert "0 KB to free" in dialog.group_list.item(0).text()
    assert all(c.isVisible() for c in dialog._cards)
    qtbot.waitUntil(lambda: _thumbnails_shown(dialog))
    _shot(dialog, "dups-keyboard.png")


def test_the_slider_regroups_from_the_cached_neighbours(
    qtbot: Any, window: MainWindow, photos: Path
) -> None:
    dialog, planted = _open(qtbot, window, photos)
    assert dialog.slider.marked == dialog.slider.value()
    assert "(library's own)" in dialog.threshold_label.text()
    near = [g for g in dialog.groups if not g.exact]
    assert near
    with qtbot.waitSignal(dialog.loaded, timeout=30_000):
        dialog.slider.setValue(dialog.slider.maximum())  # 1.000: only exact copies are alike
    assert dialog.threshold_label.text() == "1.000"
    assert dialog.default_button.isEnabled()
    shown = _shown_paths(dialog)
    assert len(shown) == 1 and all(len(group) == 2 for group in shown)  # the byte copy
    cards = [Path(c.member.path) for c in dialog._cards]
    assert len(cards) == 2 and set(cards) == shown[0]  # its photos shown, not the old ones
    _shot(dialog, "dups-slider.png")
    with qtbot.waitSignal(dialog.loaded, timeout=30_000):
        dialog.default_button.click()
    assert len(dialog.groups) == len(planted)


def _answer(qtbot: Any, dialog: DuplicatesDialog, button: QMessageBox.StandardButton) -> list[str]:
    """Answer the confirmation when it comes; what it said."""
    said: list[str] = []

    def answer() -> None:
        box = dialog.confirmation
        if box is None:
            QTimer.singleShot(20, answer)
            return
        said.append(box.text())
        _shot_box = box.grab()
        SHOTS.mkdir(parents=True, exist_ok=True)
        _shot_box.save(str(SHOTS / "dups-confirm.png"))
        box.button(button).click()

    QTimer.singleShot(20, answer)
    return said


def test_nothing_moves_without_a_yes_and_a_yes_trashes_exactly_the_dropped(
    qtbot: Any, window: MainWindow, services: Clipdesk, photos: Path, trash_home: Path
) -> None:
    dialog, _ = _open(qtbot, window, photos)
    before = _files(photos)
    dropped = [Path(m.path) for g in dialog.groups for m in g.members[1:]]
    size = sum(m.facts.size for g in dialog.groups for m in g.members[1:])
    said = _answer(qtbot, dialog, QMessageBox.StandardButton.Cancel)
    qtbot.keyClick(dialog, Qt.Key.Key_Return)
    assert said and said[0].startswith(f"Move {len(dropped)} photos (")
    assert dialog.idle
    assert _files(photos) == before and not trash_home.exists()

    with qtbot.waitSignal(dialog.trashed, timeout=30_000):
        _answer(qtbot, dialog, QMessageBox.StandardButton.Yes)
        dialog.trash_button.click()
    qtbot.waitUntil(lambda: dialog.idle, timeout=30_000)
    assert sorted(p.name for p in (trash_home / "files").iterdir()) == sorted(
        p.name for p in dropped
    )
    after = _files(photos)
    assert after == {p: b for p, b in before.items() if p not in dropped}  # the rest: untouched
    assert dialog.last_trash is not None and not dialog.last_trash.failed
    assert sum(t.size for t in dialog.last_trash.trashed) == size
    known = {ref.path for ref in services.photo_refs(list(range(1, 1000))).values()}
    assert not known & {str(p) for p in dropped}  # the library forgot them
    assert dialog.groups == [] and dialog.summary.text().startswith(f"Moved {len(dropped)} photos")
    qtbot.waitUntil(lambda: window.runner.active == 0, timeout=20_000)
    assert not {str(p) for p in dropped} & {ref.path for ref in window.model.refs}
    dialog.log_button.click()  # the undo list: each file and where it went
    qtbot.waitUntil(lambda: dialog.log_box is not None, timeout=10_000)
    assert dialog.log_box is not None
    assert dialog.log_box.text().startswith(f"clipdesk moved {len(dropped)} photos")
    for path in dropped:
        assert f"{path}\n    → {trash_home / 'files' / path.name}" in dialog.log_box.detailedText()
    dialog.log_box.close()


def test_a_file_that_cannot_be_trashed_is_said_and_the_rest_go(
    qtbot: Any, window: MainWindow, photos: Path, trash_home: Path
) -> None:
    dialog, _ = _open(qtbot, window, photos)
    dropped = [Path(m.path) for g in dialog.groups for m in g.members[1:]]
    changed = dropped[0]  # changed on disk after the view looked: it must stay
    stat = changed.stat()
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    with qtbot.waitSignal(dialog.trashed, timeout=30_000):
        _answer(qtbot, dialog, QMessageBox.StandardButton.Yes)
        qtbot.keyClick(dialog, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: dialog.idle, timeout=30_000)
    report = dialog.last_trash
    assert report is not None
    assert [Path(p) for p, _ in report.failed] == [changed]
    assert changed.exists()
    assert all(not p.exists() for p in dropped[1:])
    box = dialog.failure_box
    assert box is not None and box.isVisible()
    assert "1 photo could not be moved; it stays where it is" in box.text()
    assert box.informativeText().startswith(f"{changed.name}: ")  # named, not hidden
    assert f"{changed}: " in box.detailedText() and "changed" in box.detailedText()
    _shot(dialog, "dups-failed.png")
    box.grab().save(str(SHOTS / "dups-failed-box.png"))
    box.close()


def test_before_indexing_the_exact_copies_are_shown(
    qtbot: Any, window: MainWindow, services: Clipdesk, photos: Path
) -> None:
    planted = plant(photos)
    services.add_folders([photos])
    list(services.scan())  # found, not indexed: no vectors to compare
    dialog = open_duplicates(window)
    qtbot.waitUntil(lambda: dialog.idle and dialog.report is not None, timeout=60_000)
    exact = {(original, copy) for original, copies in planted.items() for copy in copies}
    exact = {pair for pair in exact if pair[0].read_bytes() == pair[1].read_bytes()}
    assert _shown_paths(dialog) == [set(pair) for pair in exact]
    assert "too few indexed photos" in dialog.how_label.text()  # and it says why


def test_without_an_index_the_exact_copies_are_shown_and_it_says_why(
    qtbot: Any, library: Any, settings: Any, photos: Path
) -> None:
    planted = plant(photos)
    services = Clipdesk(library)  # no model: nothing can be indexed
    services.add_folders([photos])
    list(services.scan())
    win = MainWindow(services, settings, index_on_start=False)
    qtbot.addWidget(win)
    with qtbot.waitSignal(win.status_refreshed, timeout=10_000):
        win.show()
    dialog = open_duplicates(win)
    qtbot.waitUntil(lambda: dialog.idle and dialog.report is not None, timeout=60_000)
    copies = [(a, b) for a, bs in planted.items() for b in bs if a.read_bytes() == b.read_bytes()]
    assert _shown_paths(dialog) == [set(pair) for pair in copies]
    assert dialog.threshold_label.text() == "exact copies only"
    assert not dialog.slider.isEnabled()
    assert dialog.how_label.text() == "Near-duplicates need the library indexed."
    win.close()
    assert win.runner.active == 0
