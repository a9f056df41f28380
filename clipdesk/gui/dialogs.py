"""Dialogs: a label set editor, the model catalog, an import-weights form, the quick-look
preview, and the list of files that could not be read."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QGuiApplication, QImage, QKeyEvent, QPixmap, QResizeEvent
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPlainTextEdit,
    QPushButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from clipdesk.library.browsing import PhotoRef
from clipdesk.models.catalog import CATALOG, CatalogEntry, license_notice, speeds_cpu
from clipdesk.wording import human_size

if TYPE_CHECKING:
    from clipdesk.models.store import ModelInfo

WHOLE_LIBRARY = "The whole library"


class LabelSetDialog(QDialog):
    """Create or edit a label set and choose where to run it."""

    def __init__(
        self,
        folders: list[str],
        name: str = "",
        labels: list[str] | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Edit label set" if name else "New label set")
        self.name_edit = QLineEdit(name)
        self.name_edit.setPlaceholderText("e.g. events")
        self.labels_edit = QPlainTextEdit("\n".join(labels or []))
        self.labels_edit.setPlaceholderText("birthday\nhiking\nreceipts\npets")
        self.labels_edit.setMinimumHeight(160)
        self.multi_check = QCheckBox("A photo may get several labels")
        self.scope_combo = QComboBox()
        self.scope_combo.addItem(WHOLE_LIBRARY, None)
        for folder in folders:
            self.scope_combo.addItem(folder, folder)
        form = QFormLayout()
        form.addRow("Name", self.name_edit)
        form.addRow("Labels, one per line", self.labels_edit)
        form.addRow("", self.multi_check)
        form.addRow("Tag", self.scope_combo)
        hint = QLabel(
            "clipdesk compares each photo with every label (described in many ways, as in "
            "the CLIP paper) and keeps the labels that fit. You can review the tags after."
        )
        hint.setWordWrap(True)
        hint.setForegroundRole(hint.foregroundRole())
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel)
        self.run_button = buttons.addButton("Save and tag", QDialogButtonBox.ButtonRole.AcceptRole)
        buttons.accepted.connect(self._accept_if_valid)
        buttons.rejected.connect(self.reject)
        self.error_label = QLabel()
        self.error_label.setStyleSheet("color: palette(bright-text);")
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(hint)
        layout.addWidget(self.error_label)
        layout.addWidget(buttons)
        self.resize(460, 420)

    @property
    def labels(self) -> list[str]:
        lines = (line.strip() for line in self.labels_edit.toPlainText().splitlines())
        return list(dict.fromkeys(line for line in lines if line))

    @property
    def folder(self) -> str | None:
        data = self.scope_combo.currentData()
        return data if isinstance(data, str) else None

    def _accept_if_valid(self) -> None:
        if not self.name_edit.text().strip():
            self.error_label.setText("Give the label set a name.")
        elif not self.labels:
            self.error_label.setText("Write at least one label.")
        else:
            self.accept()


class ModelCatalogDialog(QDialog):
    """The catalog's models with their size, measured speed, license and languages; the
    chosen one is downloaded (a research-only license asks first: confirm_license)."""

    COLUMNS = ("Model", "Size", "Speed", "License", "Languages", "")

    def __init__(self, models: list[ModelInfo], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Download a model")
        self.table = QTreeWidget()
        self.table.setHeaderLabels(list(self.COLUMNS))
        self.table.setRootIsDecorated(False)
        for info in models:
            if info.kind != "catalog":
                continue
            speed = f"{info.relative_speed:.2f}x" if info.relative_speed is not None else "?"
            size = human_size(info.size_bytes) if info.size_bytes else "?"
            license_text = info.license + (" (research only)" if info.research_only else "")
            state = "installed" if info.installed else ("default" if info.default else "")
            item = QTreeWidgetItem([info.name, size, speed, license_text, info.languages, state])
            item.setData(0, Qt.ItemDataRole.UserRole, info.name)
            item.setToolTip(0, f"{info.spec}: {info.description}")
            item.setToolTip(3, info.license_url)
            self.table.addTopLevelItem(item)
            if info.default:
                self.table.setCurrentItem(item)
        for column in range(len(self.COLUMNS)):
            self.table.resizeColumnToContents(column)
        cpu = speeds_cpu()
        note = QLabel(
            "Speed: photos per second indexed, against vit-b-32"
            + (f", measured on {cpu}." if cpu else " (not measured yet).")
            + " Weights marked research only may not be used for anything else."
        )
        note.setWordWrap(True)
        self.details = QLabel()
        self.details.setWordWrap(True)
        self.details.setOpenExternalLinks(True)
        self.details.setTextFormat(Qt.TextFormat.RichText)
        self.table.currentItemChanged.connect(lambda *_: self._show_details())
        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Download")
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        self.table.itemDoubleClicked.connect(lambda *_: self.accept())
        layout = QVBoxLayout(self)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.details)
        layout.addWidget(note)
        layout.addWidget(self.buttons)
        self._models = {info.name: info for info in models}
        self._show_details()
        self.resize(860, 420)

    def selected_name(self) -> str | None:
        item = self.table.currentItem()
        name = item.data(0, Qt.ItemDataRole.UserRole) if item is not None else None
        return name if isinstance(name, str) else None

    def _show_details(self) -> None:
        info = self._models.get(self.selected_name() or "")
        if info is None:
            self.details.setText("")
            return
        self.details.setText(
            f"<b>{info.name}</b> ({info.spec}): {info.description}. License: "
            f'<a href="{info.license_url}">{info.license}</a>'
            + (" — research use only" if info.research_only else "")
        )


def confirm_license(parent: QWidget | None, entry: CatalogEntry) -> bool:
    """Ask before a research-only model's weights are downloaded; No is the default."""
    answer = QMessageBox.question(
        parent,
        "Research-only license",
        f"{license_notice(entry)}.\n\nDownload {entry.name} only if you will use it for "
        "research. Do you accept its license?",
        QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
        QMessageBox.StandardButton.No,
    )
    return answer == QMessageBox.StandardButton.Yes


class ImportWeightsDialog(QDialog):
    """Pick a weights file and the architecture it belongs to."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Import model weights")
        self.file_edit = QLineEdit()
        self.file_edit.setPlaceholderText("a .safetensors, .pt or .bin file")
        browse = QPushButton("Choose…")
        browse.clicked.connect(self._choose)
        row = QHBoxLayout()
        row.addWidget(self.file_edit)
        row.addWidget(browse)
        self.arch_combo = QComboBox()
        self.arch_combo.setEditable(True)
        for arch in dict.fromkeys(entry.arch for entry in CATALOG):
            self.arch_combo.addItem(arch)
        self.name_edit = QLineEdit()
        self.config_edit = QLineEdit()
        self.config_edit.setPlaceholderText("only for a custom architecture (open_clip JSON)")
        form = QFormLayout()
        form.addRow("Weights file", row)
        form.addRow("Architecture", self.arch_combo)
        form.addRow("Model config", self.config_edit)
        form.addRow("Name", self.name_edit)
        note = QLabel("The file is copied into clipdesk's model folder; yours is only read.")
        note.setWordWrap(True)
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(note)
        layout.addWidget(buttons)
        self.resize(520, 220)

    def _choose(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Model weights", "", "Weights (*.safetensors *.pt *.pth *.bin);;All files (*)"
        )
        if path:
            self.file_edit.setText(path)
            if not self.name_edit.text():
                stem = re.sub(r"[^A-Za-z0-9._-]+", "-", os.path.splitext(os.path.basename(path))[0])
                self.name_edit.setText(stem.strip("-")[:64] or "imported")


class QuickLookDialog(QDialog):
    """A large preview: Space or Esc closes, Left/Right step through the grid."""

    step_requested = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Preview")
        self.image_label = QLabel("Loading…")
        self.image_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.image_label.setMinimumSize(320, 240)
        self.caption = QLabel()
        self.caption.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.caption.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout = QVBoxLayout(self)
        layout.addWidget(self.image_label, 1)
        layout.addWidget(self.caption)
        self._image: QImage | None = None
        self.ref: PhotoRef | None = None
        screen = QGuiApplication.primaryScreen()
        if screen is not None:
            area = screen.availableGeometry()
            self.resize(int(area.width() * 0.7), int(area.height() * 0.8))

    def show_photo(self, ref: PhotoRef, loader: Callable[[PhotoRef], None]) -> None:
        self.ref = ref
        self._image = None
        self.image_label.setPixmap(QPixmap())
        self.image_label.setText("Loading…")
        self.caption.setText(ref.path)
        loader(ref)

    def set_image(self, ref: PhotoRef, image: QImage | None, error: str = "") -> None:
        if ref != self.ref:
            return  # an older request
        self._image = image
        if image is None:
            self.image_label.setText(f"This photo cannot be shown: {error}")
            return
        self._fit()

    def _fit(self) -> None:
        if self._image is None:
            return
        ratio = self.devicePixelRatioF()
        target = self.image_label.size() * ratio
        pixmap = QPixmap.fromImage(
            self._image.scaled(
                target,
                Qt.AspectRatioMode.KeepAspectRatio,
                Qt.TransformationMode.SmoothTransformation,
            )
        )
        pixmap.setDevicePixelRatio(ratio)
        self.image_label.setPixmap(pixmap)

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        self._fit()

    def keyPressEvent(self, event: QKeyEvent) -> None:
        if event.key() in (Qt.Key.Key_Space, Qt.Key.Key_Escape):
            self.close()
        elif event.key() == Qt.Key.Key_Right:
            self.step_requested.emit(1)
        elif event.key() == Qt.Key.Key_Left:
            self.step_requested.emit(-1)
        else:
            super().keyPressEvent(event)


class UnreadableDialog(QDialog):
    """The files the library could not read, each with the reason, so a person can act on
    them (replace a half-copied file, say). clipdesk tries them again on each index."""

    def __init__(
        self,
        failed: list[tuple[str, str]],
        show_in_folder: Callable[[str], object],
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Files that could not be read")
        self.resize(760, 360)
        intro = QLabel(
            f"{len(failed):,} file{'' if len(failed) == 1 else 's'} could not be read. They "
            "stay where they are, untouched; clipdesk tries them again each time it "
            "indexes, so a fixed or replaced file is picked up."
        )
        intro.setWordWrap(True)
        self.table = QTreeWidget()
        self.table.setHeaderLabels(["File", "Why"])
        self.table.setRootIsDecorated(False)
        for path, reason in sorted(failed):
            item = QTreeWidgetItem([os.path.basename(path), reason])
            item.setToolTip(0, path)
            item.setToolTip(1, reason)
            item.setData(0, Qt.ItemDataRole.UserRole, path)
            self.table.addTopLevelItem(item)
        self.table.resizeColumnToContents(0)
        first = self.table.topLevelItem(0)
        if first is not None:
            self.table.setCurrentItem(first)
        show = QPushButton("Show in folder")

        def show_current() -> None:
            item = self.table.currentItem()
            if item is not None:
                show_in_folder(item.data(0, Qt.ItemDataRole.UserRole))

        show.clicked.connect(show_current)
        self.table.itemActivated.connect(lambda _item, _col: show_current())
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.addButton(show, QDialogButtonBox.ButtonRole.ActionRole)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addWidget(self.table, 1)
        layout.addWidget(buttons)
