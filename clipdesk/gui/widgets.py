"""The window's own small widgets: the search field, a one-line label that never widens
the window, and the page an empty library shows."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QGuiApplication, QImage, QKeyEvent, QKeySequence
from PySide6.QtWidgets import QHBoxLayout, QLabel, QLineEdit, QPushButton, QVBoxLayout, QWidget

from clipdesk.imaging import is_image_name
from clipdesk.models.catalog import CATALOG, DEFAULT_NAME
from clipdesk.models.export_files import torch_available
from clipdesk.wording import human_size


class SearchField(QLineEdit):
    """The search box: Esc clears; pasting an image (or an image file) searches by it."""

    image_pasted = Signal(object)  # QImage or a file path
    down_pressed = Signal()  # on to the results, as in a browser's address bar

    def keyPressEvent(self, event: QKeyEvent) -> None:
        if event.key() == Qt.Key.Key_Escape:
            self.clear()
            return
        if event.key() in (Qt.Key.Key_Down, Qt.Key.Key_PageDown):
            self.down_pressed.emit()
            return
        if event.matches(QKeySequence.StandardKey.Paste):
            mime = QGuiApplication.clipboard().mimeData()
            files = [u.toLocalFile() for u in mime.urls() if u.isLocalFile()] if mime else []
            if files and is_image_name(files[0]):
                self.image_pasted.emit(files[0])
                return
            if mime is not None and mime.hasImage() and not mime.hasText():
                self.image_pasted.emit(QImage(mime.imageData()))
                return
        super().keyPressEvent(event)


class ElidedLabel(QLabel):
    """One line that never widens the window: text too long for the space ends in "…"
    (or loses its middle, for paths), with the whole text as the tooltip."""

    def __init__(self, mode: Qt.TextElideMode = Qt.TextElideMode.ElideRight) -> None:
        super().__init__()
        self._full = ""
        self._mode = mode

    def setText(self, text: str) -> None:
        self._full = text
        self.setToolTip(text if len(text) > 60 else "")
        self._elide()
        # The hint follows the whole text. QLabel only asks the layout again when what it
        # shows changes: a label squeezed to nothing shows "" before and after, and stayed
        # 2 px wide (the model's name vanished from the status bar).
        self.updateGeometry()

    def text(self) -> str:
        return self._full

    def minimumSizeHint(self) -> QSize:
        return QSize(0, super().minimumSizeHint().height())

    def sizeHint(self) -> QSize:
        # from the whole text (QLabel's own hint would follow the elided one, and shrink)
        margins = self.contentsMargins()
        wanted = self.fontMetrics().horizontalAdvance(" ".join(self._full.split()))
        wanted += margins.left() + margins.right() + 2
        return QSize(min(wanted, 400), super().sizeHint().height())

    def resizeEvent(self, event: Any) -> None:
        super().resizeEvent(event)
        self._elide()

    def _elide(self) -> None:
        line = " ".join(self._full.split())  # one line, whatever the message's breaks
        room = self.contentsRect().width()
        super().setText(self.fontMetrics().elidedText(line, self._mode, room) if room else line)


class WelcomeWidget(QWidget):
    """What an empty library shows: add a folder, and get a model if there is none."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        title = QLabel("Welcome to clipdesk")
        font = title.font()
        font.setPointSizeF(font.pointSizeF() * 2)
        font.setBold(True)
        title.setFont(font)
        self.title = title
        text = QLabel()
        text.setWordWrap(True)
        self.text = text
        self.add_button = QPushButton("Add a folder…")
        self.add_button.setDefault(True)
        self.model_text = QLabel()
        self.model_text.setWordWrap(True)
        self.download_button = QPushButton()
        self.import_button = QPushButton("Import weights file…")
        model_row = QHBoxLayout()
        model_row.addWidget(self.download_button)
        model_row.addWidget(self.import_button)
        model_row.addStretch(1)
        self.model_box = QWidget()
        box = QVBoxLayout(self.model_box)
        box.setContentsMargins(0, 16, 0, 0)
        box.addWidget(self.model_text)
        box.addLayout(model_row)
        self.model_box.hide()  # until the status says whether a model is there
        inner = QWidget()
        inner.setMaximumWidth(560)
        column = QVBoxLayout(inner)
        column.addWidget(title)
        column.addWidget(text)
        row = QHBoxLayout()
        row.addWidget(self.add_button)
        row.addStretch(1)
        column.addLayout(row)
        column.addWidget(self.model_box)
        column.setSpacing(12)
        middle = QVBoxLayout()
        middle.addStretch(1)
        middle.addWidget(inner)
        middle.addStretch(2)  # a little above the centre, as dialogs sit
        outer = QHBoxLayout(self)
        outer.addStretch(1)
        outer.addLayout(middle)
        outer.addStretch(1)
        self.set_state(0, model_needed=False)

    def set_state(self, folders: int, model_needed: bool, photos: int = 0) -> None:
        """A newcomer's page; with folders already added (and no model yet), the step
        that is left."""
        if folders:
            found = f" ({photos:,} photo{'' if photos == 1 else 's'} found)" if photos else ""
            self.title.setText("One more step")
            self.text.setText(
                f"Your folder{'s are' if folders > 1 else ' is'} added{found}. clipdesk "
                "looks at your photos with a CLIP model, on this computer; once there is "
                "one, indexing starts by itself. clipdesk only reads your photos and never "
                "changes them."
            )
            self.add_button.setText("Add another folder…")
        else:
            self.title.setText("Welcome to clipdesk")
            self.text.setText(
                "Find your photos by describing them: “a dog on a beach at sunset”, "
                "“receipts”, “grandma's birthday”. Add a photo folder to begin; clipdesk "
                "only reads your photos and never changes them."
            )
            self.add_button.setText("Add a folder…")
        self.set_model_needed(model_needed)

    def set_model_needed(self, needed: bool) -> None:
        entry = next(e for e in CATALOG if e.name == DEFAULT_NAME)
        self.model_box.setVisible(needed)
        if not torch_available():  # the CPU bundle runs exported models only
            self.model_text.setText(
                "clipdesk needs a CLIP model to understand photos. This CPU version of "
                "clipdesk runs exported models: import one (a folder that the full version "
                "of clipdesk makes with “clipdesk models export”)."
            )
            self.download_button.hide()
            self.import_button.setText("Import exported model…")
            return
        self.model_text.setText(
            "clipdesk needs a CLIP model to understand photos. Download the default one "
            f"({entry.arch}, about {human_size(entry.size_bytes)}) once, or import a "
            "weights file you already have."
        )
        self.download_button.setText(f"Download model ({human_size(entry.size_bytes)})")
