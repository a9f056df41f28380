"""The details panel: a large preview, the facts about one photo, its tags, actions."""

from __future__ import annotations

import os

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QImage, QPixmap
from PySide6.QtWidgets import (
    QFormLayout,
    QGridLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from clipdesk.library.browsing import PhotoDetails, PhotoRef
from clipdesk.wording import human_size

PREVIEW_SIDE = 200


def _breakable(text: str) -> str:
    """Let a long file name or path wrap anywhere (a zero-width space after each
    separator-like character), so the panel never needs a horizontal scroll bar."""
    for mark in ("/", "-", "_", "."):
        text = text.replace(mark, mark + "\u200b")
    return text


class DetailsPanel(QWidget):
    open_requested = Signal(object)
    show_in_folder_requested = Signal(object)
    copy_requested = Signal(object)
    similar_requested = Signal(object)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ref: PhotoRef | None = None
        self.preview = QLabel()
        self.preview.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.preview.setMinimumSize(PREVIEW_SIDE, PREVIEW_SIDE * 3 // 4)
        self.name_label = QLabel()
        self.name_label.setWordWrap(True)
        self.name_label.setMinimumWidth(1)
        font = self.name_label.font()
        font.setBold(True)
        font.setPointSizeF(font.pointSizeF() * 1.15)
        self.name_label.setFont(font)
        self.fields: dict[str, QLabel] = {}
        self.form = form = QFormLayout()
        form.setLabelAlignment(Qt.AlignmentFlag.AlignRight)
        for name in ("Folder", "Size", "Taken", "Camera", "Exposure", "Score", "Tags"):
            value = QLabel()
            value.setWordWrap(True)
            value.setMinimumWidth(1)  # long paths wrap (at any character) instead of widening
            value.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            self.fields[name] = value
            form.addRow(name, value)
        buttons = QGridLayout()
        self.buttons: dict[str, QPushButton] = {}
        for i, (text, signal) in enumerate(
            (
                ("Open", self.open_requested),
                ("Show in folder", self.show_in_folder_requested),
                ("Copy path", self.copy_requested),
                ("Find similar", self.similar_requested),
            )
        ):
            button = QPushButton(text)
            button.clicked.connect(lambda _=False, s=signal: self.ref and s.emit(self.ref))
            buttons.addWidget(button, i // 2, i % 2)
            self.buttons[text] = button
        self.placeholder = QLabel("Select a photo to see its details.")
        self.placeholder.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.placeholder.setWordWrap(True)
        self.body = QWidget()
        body = QVBoxLayout(self.body)
        body.setContentsMargins(0, 0, 0, 0)
        body.addWidget(self.preview)
        body.addWidget(self.name_label)
        body.addLayout(form)
        body.addLayout(buttons)
        body.addStretch(1)
        layout = QVBoxLayout(self)
        layout.addWidget(self.placeholder)
        layout.addWidget(self.body)
        self.show_nothing()

    def show_nothing(self) -> None:
        self.ref = None
        self.body.hide()
        self.placeholder.show()

    def show_ref(self, ref: PhotoRef, score: float | None, preview: QImage | None) -> None:
        """Immediate part (from the grid row); :meth:`show_details` fills in the rest."""
        self.ref = ref
        self.placeholder.hide()
        self.body.show()
        self.name_label.setText(_breakable(os.path.basename(ref.path)))
        self.name_label.setToolTip(ref.path)
        self.fields["Folder"].setText(_breakable(os.path.dirname(ref.path)))
        size = f"{ref.width} × {ref.height} px" if ref.width and ref.height else ""
        self.fields["Size"].setText(size)
        self.fields["Score"].setText("" if score is None else f"{score:.3f}")
        self.form.setRowVisible(self.fields["Score"], score is not None)
        for name in ("Taken", "Camera", "Exposure", "Tags"):
            self.fields[name].setText("…")
        self.set_preview(ref, preview)

    def set_preview(self, ref: PhotoRef, image: QImage | None) -> None:
        if ref != self.ref:
            return
        if image is None:
            self.preview.setPixmap(QPixmap())
            self.preview.setText("Loading preview…")
            return
        ratio = self.devicePixelRatioF()
        side = max(self.preview.width(), PREVIEW_SIDE)
        scaled = image.scaled(
            int(side * ratio),
            int(side * 3 // 4 * ratio),
            Qt.AspectRatioMode.KeepAspectRatio,
            Qt.TransformationMode.SmoothTransformation,
        )
        pixmap = QPixmap.fromImage(scaled)
        pixmap.setDevicePixelRatio(ratio)
        self.preview.setPixmap(pixmap)

    def show_details(self, details: PhotoDetails) -> None:
        if self.ref is None or details.photo_id != self.ref.photo_id:
            return
        size = f"{details.width} × {details.height} px" if details.width else ""
        self.fields["Size"].setText(f"{size}, {human_size(details.size_bytes)}".strip(", "))
        self.fields["Taken"].setText(details.taken_text)
        self.fields["Camera"].setText(details.camera or "—")
        self.fields["Exposure"].setText(details.exposure or "—")
        if details.tags:
            self.fields["Tags"].setText("\n".join(tag.described for tag in details.tags))
        else:
            self.fields["Tags"].setText("none yet: tag the library with a label set")
        if not details.exists:
            self.name_label.setText(self.name_label.text() + "  (file missing)")
