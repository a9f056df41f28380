"""The sidebar: the library's folders with counts and index state, smart albums and tags
with counts, and label sets. It only shows what a :class:`LibraryStatus` and the albums'
counts say, and emits requests."""

from __future__ import annotations

import os

from PySide6.QtCore import QPoint, Qt, Signal
from PySide6.QtWidgets import (
    QHBoxLayout,
    QMenu,
    QMessageBox,
    QPushButton,
    QStyle,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from clipdesk.search.albums import AlbumCount
from clipdesk.services import LibraryStatus

KIND_ROLE = Qt.ItemDataRole.UserRole + 1
VALUE_ROLE = Qt.ItemDataRole.UserRole + 2


class SidebarWidget(QWidget):
    all_requested = Signal()
    folder_requested = Signal(str)
    tag_requested = Signal(str)
    unreadable_requested = Signal()
    add_folder_requested = Signal()
    remove_folder_requested = Signal(str)
    show_folder_requested = Signal(str)
    new_label_set_requested = Signal()
    edit_label_set_requested = Signal(str)
    run_label_set_requested = Signal(str)
    delete_label_set_requested = Signal(str)
    review_requested = Signal(str, str)  # label set ("": the first that has it), label
    album_requested = Signal(str)
    rename_album_requested = Signal(str)
    delete_album_requested = Signal(str)  # confirmed by the user already
    save_album_requested = Signal()  # the search shown, as an album

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.tree = QTreeWidget()
        self.tree.setHeaderHidden(True)
        self.tree.setRootIsDecorated(False)
        self.tree.setIndentation(12)
        self.tree.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.tree.customContextMenuRequested.connect(self._menu)
        self.tree.itemClicked.connect(self._clicked)
        self.tree.itemActivated.connect(self._clicked)
        self.add_button = QPushButton("Add folder…")
        self.add_button.clicked.connect(self.add_folder_requested)
        self.label_button = QPushButton("New label set…")
        self.label_button.clicked.connect(self.new_label_set_requested)
        buttons = QHBoxLayout()
        buttons.addWidget(self.add_button)
        buttons.addWidget(self.label_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.tree, 1)
        layout.addLayout(buttons)
        self._sections: dict[str, QTreeWidgetItem] = {}
        for title in ("Library", "Folders", "Tags", "Albums", "Label sets"):
            item = QTreeWidgetItem([title])
            font = item.font(0)
            font.setBold(True)
            item.setFont(0, font)
            item.setFlags(Qt.ItemFlag.ItemIsEnabled)
            self.tree.addTopLevelItem(item)
            item.setExpanded(True)
            self._sections[title] = item
        self._all_item = self._child("Library", "All photos", "all", "")
        self._unreadable_item = self._child("Library", "", "unreadable", "")
        self._unreadable_item.setIcon(
            0, self.style().standardIcon(QStyle.StandardPixmap.SP_MessageBoxWarning)
        )
        self._unreadable_item.setToolTip(0, "Files clipdesk could not read, and why")
        self._unreadable_item.setHidden(True)
        self.update_albums([])

    def _child(self, section: str, text: str, kind: str, value: str) -> QTreeWidgetItem:
        item = QTreeWidgetItem([text])
        item.setData(0, KIND_ROLE, kind)
        item.setData(0, VALUE_ROLE, value)
        self._sections[section].addChild(item)
        return item

    def update_status(self, status: LibraryStatus, label_sets: dict[str, list[str]]) -> None:
        pending = f" · {status.pending:,} to index" if status.pending else ""
        # the photos that can be shown, as the grid counts them; the others apart
        readable = status.photos - len(status.failed)
        self._all_item.setText(0, f"All photos ({readable:,}{pending})")
        self._unreadable_item.setText(0, f"Could not be read ({len(status.failed):,})")
        self._unreadable_item.setHidden(not status.failed)
        folders = self._sections["Folders"]
        folders.takeChildren()
        warn = self.style().standardIcon(QStyle.StandardPixmap.SP_MessageBoxWarning)
        icon = self.style().standardIcon(QStyle.StandardPixmap.SP_DirIcon)
        for folder in status.folders:
            name = folder.path.rstrip("/").rsplit("/", 1)[-1] or folder.path
            inside = folder.path.rstrip(os.sep) + os.sep
            bad = sum(1 for path, _ in status.failed if path.startswith(inside))
            readable = folder.photos - bad
            if not folder.available:
                state = "not found: unplugged or moved?"
            elif folder.indexed < readable:
                state = f"{folder.indexed:,} of {readable:,} indexed"
            else:
                state = f"{readable:,} photo{'' if readable == 1 else 's'}"
            if bad and folder.available:
                state += f", {bad:,} unreadable"
            item = self._child("Folders", f"{name}  ({state})", "folder", folder.path)
            item.setToolTip(0, folder.path)
            item.setIcon(0, icon if folder.available else warn)
        if not status.folders:
            hint = self._child("Folders", "No folders yet: add one", "add", "")
            hint.setForeground(0, self.palette().placeholderText())
        tags = self._sections["Tags"]
        tags.takeChildren()
        for label, count in sorted(status.tags.items(), key=lambda t: (-t[1], t[0])):
            self._child("Tags", f"{label}  ({count:,})", "tag", label)
        if not status.tags:
            hint = self._child("Tags", "None yet: run a label set", "new_set", "")
            hint.setForeground(0, self.palette().placeholderText())
        sets = self._sections["Label sets"]
        sets.takeChildren()
        for name, labels in label_sets.items():
            item = self._child("Label sets", name, "label_set", name)
            item.setToolTip(0, ", ".join(labels))
        if not label_sets:
            hint = self._child("Label sets", "None yet: create one to tag photos", "new_set", "")
            hint.setForeground(0, self.palette().placeholderText())

    def update_albums(self, albums: list[AlbumCount]) -> None:
        """Each smart album with how many photos it shows (or why it cannot run)."""
        section = self._sections["Albums"]
        section.takeChildren()
        warn = self.style().standardIcon(QStyle.StandardPixmap.SP_MessageBoxWarning)
        for entry in albums:
            name = entry.album.name
            count = f"{entry.count:,}" if entry.count is not None else "!"
            item = self._child("Albums", f"{name}  ({count})", "album", name)
            item.setToolTip(0, entry.error or entry.album.query)
            if entry.error:
                item.setIcon(0, warn)
        if not albums:
            hint = self._child(
                "Albums", "None yet: search, then save the search as an album", "save_album", ""
            )
            hint.setForeground(0, self.palette().placeholderText())

    def album_names(self) -> list[str]:
        section = self._sections["Albums"]
        children = [section.child(i) for i in range(section.childCount())]
        return [c.data(0, VALUE_ROLE) for c in children if c and c.data(0, KIND_ROLE) == "album"]

    def _confirm_delete_album(self, name: str) -> None:
        answer = QMessageBox.question(
            self,
            "Delete album",
            f"Delete the album “{name}”? Only the saved search goes; no photo is touched.",
        )
        if answer == QMessageBox.StandardButton.Yes:
            self.delete_album_requested.emit(name)

    def _clicked(self, item: QTreeWidgetItem) -> None:
        kind, value = item.data(0, KIND_ROLE), item.data(0, VALUE_ROLE)
        if kind == "all":
            self.all_requested.emit()
        elif kind == "folder":
            self.folder_requested.emit(value)
        elif kind == "tag":
            self.tag_requested.emit(value)
        elif kind == "album":
            self.album_requested.emit(value)
        elif kind == "save_album":
            self.save_album_requested.emit()
        elif kind == "unreadable":
            self.unreadable_requested.emit()
        elif kind == "label_set":
            self.edit_label_set_requested.emit(value)
        elif kind == "add":
            self.add_folder_requested.emit()
        elif kind == "new_set":
            self.new_label_set_requested.emit()

    def _menu(self, pos: QPoint) -> None:
        item = self.tree.itemAt(pos)
        if item is None:
            return
        kind, value = item.data(0, KIND_ROLE), item.data(0, VALUE_ROLE)
        menu = QMenu(self)
        if kind == "folder":
            menu.addAction("Show photos", lambda: self.folder_requested.emit(value))
            menu.addAction("Show in file manager", lambda: self.show_folder_requested.emit(value))
            menu.addSeparator()
            menu.addAction(
                "Remove from library (files stay)",
                lambda: self.remove_folder_requested.emit(value),
            )
        elif kind == "label_set":
            menu.addAction("Edit and tag…", lambda: self.edit_label_set_requested.emit(value))
            menu.addAction("Tag the library now", lambda: self.run_label_set_requested.emit(value))
            menu.addAction("Review tags…", lambda: self.review_requested.emit(value, ""))
            menu.addSeparator()
            menu.addAction("Delete label set", lambda: self.delete_label_set_requested.emit(value))
        elif kind == "tag":
            menu.addAction("Show photos with this tag", lambda: self.tag_requested.emit(value))
            menu.addAction("Review…", lambda: self.review_requested.emit("", value))
        elif kind == "album":
            menu.addAction("Show photos", lambda: self.album_requested.emit(value))
            menu.addAction("Rename…", lambda: self.rename_album_requested.emit(value))
            menu.addSeparator()
            menu.addAction("Delete album…", lambda: self._confirm_delete_album(value))
        elif kind == "save_album" or item is self._sections["Albums"]:
            menu.addAction("Save search as album…", self.save_album_requested.emit)
        else:
            return
        menu.exec(self.tree.viewport().mapToGlobal(pos))
