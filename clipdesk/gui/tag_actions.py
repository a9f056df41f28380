"""What the window does with tags by hand: add a tag to the selected photos (with
completion from the library's tags), take tags off them, undo either, and open the review
view (clipdesk.gui.review). After every change the sidebar's counts, the details panel
and a grid filtered by a tag follow."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QPalette
from PySide6.QtWidgets import (
    QCompleter,
    QDialog,
    QDialogButtonBox,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QVBoxLayout,
    QWidget,
)

from clipdesk.gui.review import ReviewDialog
from clipdesk.gui.window_base import WindowPart
from clipdesk.library import tags as tag_rule
from clipdesk.library.browsing import PhotoDetails, PhotoRef
from clipdesk.library.tags import MarkChange, Tag
from clipdesk.progress import CancelToken
from clipdesk.tagging.review import labels_in
from clipdesk.wording import plural


class AddTagDialog(QDialog):
    """A tag's name, with completion from the tags the library has."""

    def __init__(self, photos: int, known: list[str], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Add tag")
        self.name_edit = QLineEdit()
        self.name_edit.setPlaceholderText("a tag of your own, or one the library has")
        self.completer = QCompleter(known, self)
        self.completer.setCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        self.completer.setFilterMode(Qt.MatchFlag.MatchContains)
        self.name_edit.setCompleter(self.completer)
        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Add")
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        self.name_edit.textChanged.connect(self._check)
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel(f"Add a tag to {plural(photos, 'selected photo')}:"))
        layout.addWidget(self.name_edit)
        hint = QLabel(
            "It stays with the photos through renames, moves and new tagging runs; Ctrl+Z "
            "in the window takes it back."
        )
        hint.setWordWrap(True)
        hint.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        layout.addWidget(hint)
        layout.addWidget(self.buttons)
        self.setMinimumWidth(380)
        self._check("")

    @property
    def name(self) -> str:
        return " ".join(self.name_edit.text().split())

    def _check(self, _text: str) -> None:
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setEnabled(bool(self.name))


class RemoveTagDialog(QDialog):
    """The selection's tags, with how many of the photos have each; the checked ones go."""

    def __init__(self, photos: int, counts: dict[str, int], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Remove tag")
        self.list = QListWidget()
        for name, count in sorted(counts.items(), key=lambda t: (-t[1], t[0].casefold())):
            item = QListWidgetItem(f"{name}  ({count:,} of {photos:,})")
            item.setData(Qt.ItemDataRole.UserRole, name)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Unchecked)
            self.list.addItem(item)
        if self.list.count() == 1:
            only = self.list.item(0)
            only.setCheckState(Qt.CheckState.Checked)
        self.list.itemChanged.connect(lambda _: self._check())
        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Remove")
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel(f"Remove tags from {plural(photos, 'selected photo')}:"))
        layout.addWidget(self.list)
        hint = QLabel("A removed tag is never given to these photos again by a tagging run.")
        hint.setWordWrap(True)
        hint.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        layout.addWidget(hint)
        layout.addWidget(self.buttons)
        self.setMinimumWidth(380)
        self._check()

    @property
    def names(self) -> list[str]:
        items = [self.list.item(i) for i in range(self.list.count())]
        return [
            str(item.data(Qt.ItemDataRole.UserRole))
            for item in items
            if item.checkState() == Qt.CheckState.Checked
        ]

    def _check(self) -> None:
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setEnabled(bool(self.names))


class TagActions(WindowPart):
    """The manual-tag and review part of the main window."""

    tag_dialog: QDialog | None = None  # the add or remove dialog open now (tests drive it)
    review_dialog: ReviewDialog | None = None
    tag_undo: list[list[MarkChange]]  # made in MainWindow.__init__
    undo_tag_action: QAction  # Edit > Undo tag change, made in MainWindow._build

    # -- by hand -----------------------------------------------------------------------------

    def _tag_targets(self) -> list[PhotoRef]:
        refs = self.grid.selected_refs()
        current = self.grid.current_ref()
        if not refs and current is not None:
            refs = [current]
        if not refs:
            self.show_error("Select one or more photos first.")
        return refs

    def add_tag_to_selected(self) -> None:
        refs = self._tag_targets()
        if not refs:
            return

        def ask(known: list[str]) -> None:
            dialog = AddTagDialog(len(refs), known, self)
            self.tag_dialog = dialog

            def done(result: int) -> None:
                self.tag_dialog = None
                if result == QDialog.DialogCode.Accepted and dialog.name:
                    ids = [ref.photo_id for ref in refs]
                    self._mark({dialog.name: ids}, len(refs), tag_rule.MANUAL)

            dialog.finished.connect(done)
            dialog.open()

        self.run(lambda _: self.services.known_tags(), ask, "known tags")

    def remove_tag_from_selected(self) -> None:
        refs = self._tag_targets()
        if not refs:
            return
        ids = [ref.photo_id for ref in refs]

        def ask(tags: dict[int, list[Tag]]) -> None:
            having: dict[str, list[int]] = {}  # each tag: the selected photos that have it
            for photo_id, photo_tags in tags.items():
                for tag in photo_tags:
                    having.setdefault(tag.label, []).append(photo_id)
            counts = {name: len(ids) for name, ids in having.items()}
            if not counts:
                self.show_error(
                    "The selected photo has no tag."
                    if len(refs) == 1
                    else "None of the selected photos has a tag."
                )
                return
            dialog = RemoveTagDialog(len(refs), counts, self)
            self.tag_dialog = dialog

            def done(result: int) -> None:
                self.tag_dialog = None
                if result == QDialog.DialogCode.Accepted and dialog.names:
                    wanted = {name: having[name] for name in dialog.names}
                    self._mark(wanted, len(refs), tag_rule.REJECTED)

            dialog.finished.connect(done)
            dialog.open()

        self.run(lambda _: self.services.tags_of(ids), ask, "tags of the selection")

    def _mark(self, wanted: dict[str, list[int]], photos: int, source: str) -> None:
        """Mark each tag on its photos (a removed tag: only on those that had it, so no
        photo gets a word it never needed); one undo step for all."""
        services = self.services
        names = list(wanted)

        def write(_: CancelToken) -> list[MarkChange]:
            return [services.mark_tag(name, ids, source) for name, ids in wanted.items()]

        def written(changes: list[MarkChange]) -> None:
            self.tag_undo.append(changes)
            self.undo_tag_action.setEnabled(True)
            quoted = ", ".join(f"“{name}”" for name in names)
            count = plural(photos, "photo")
            said = f"Added {quoted} to" if source == tag_rule.MANUAL else f"Removed {quoted} from"
            self.statusBar().showMessage(f"{said} {count} · Ctrl+Z undoes", 8000)
            self.tags_changed()

        self.run(write, written, "tag photos")

    def undo_tag_change(self) -> None:
        if not self.tag_undo:
            return
        changes = self.tag_undo.pop()
        self.undo_tag_action.setEnabled(bool(self.tag_undo))

        def write(_: CancelToken) -> None:
            for change in reversed(changes):
                self.services.undo_mark(change)

        def undone(_: object) -> None:
            names = ", ".join(f"“{change.name}”" for change in changes)
            self.statusBar().showMessage(f"Undone: the change of {names}", 6000)
            self.tags_changed()

        self.run(write, undone, "undo tag change")

    def tags_changed(self) -> None:
        """Tags changed: the sidebar's counts, the details panel, and a grid showing one
        tag follow."""
        self.refresh_status()
        current = self.history.current
        if current is not None and current.tag:
            self.navigate(current, record=False)
            return
        ref = self.grid.current_ref()
        if ref is None:
            return
        photo_id = ref.photo_id

        def shown(details: PhotoDetails | None) -> None:
            if details is not None:
                self.details.show_details(details)

        self.run(lambda _: self.services.photo_details(photo_id), shown, "details")

    # -- review ------------------------------------------------------------------------------

    def review_tags(self, label_set: str = "", label: str = "") -> None:
        """Open the review view on ``label`` of ``label_set`` (a tag's name alone: the
        first set that has it)."""
        if not self.label_sets:
            self.show_error("Create a label set and tag the library first; then review.")
            return
        if label and not label_set:
            sets = labels_in(self.label_sets, label)
            if not sets:
                self.show_error(
                    f"“{label}” was given by hand, not by a label set: there is nothing to review."
                )
                return
            label_set = sets[0]
        dialog = self.review_dialog
        if dialog is None:  # one per window, kept: its late results always find it
            dialog = ReviewDialog(
                self.services, self.thumbnails, self.run, self.label_sets, label_set, label, self
            )
            dialog.marks_changed.connect(self.tags_changed)
            self.review_dialog = dialog
        else:
            dialog.show_label(self.label_sets, label_set, label)
        dialog.show()
        dialog.raise_()
        dialog.activateWindow()
