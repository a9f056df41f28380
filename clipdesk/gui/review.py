"""The review view: one label's queue (clipdesk.tagging.review), a large preview of the
photo at hand and a strip of the queue; accept or reject with the keyboard or the
buttons, undo, progress, and bulk accept of a selection in the strip.

Keys: Y or Enter accepts, N or Delete rejects, Space or Right skips, Left goes back,
Ctrl+Z undoes. With several photos selected in the strip, accept and reject act on all
of them. What the user says is written off the GUI thread, one change after the other in
the order given (an undo always follows the change it takes back)."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from PySide6.QtCore import QEvent, QModelIndex, QObject, QPersistentModelIndex, QRect, Qt, Signal
from PySide6.QtGui import QColor, QFont, QImage, QKeyEvent, QKeySequence, QPainter, QPixmap
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QHBoxLayout,
    QLabel,
    QListView,
    QPushButton,
    QSizePolicy,
    QStyleOptionViewItem,
    QVBoxLayout,
    QWidget,
)

from clipdesk.gui.grid import REF_ROLE, PhotoDelegate, PhotoGridModel
from clipdesk.gui.thumbnails import ThumbnailProvider
from clipdesk.gui.workers import Worker
from clipdesk.imaging import load_rgb
from clipdesk.library import tags as tag_rule
from clipdesk.library.browsing import PhotoRef
from clipdesk.library.tags import MarkChange
from clipdesk.progress import CancelToken
from clipdesk.services import Clipdesk
from clipdesk.tagging.review import ReviewItem, ReviewQueue

Run = Callable[..., Worker]  # MainWindow.run(fn, on_success, name, on_failure)
ORDER_NAMES = {"surest": "Surest first", "least_sure": "Least sure first"}
PREVIEW_SIDE = 1024  # decoded for the large preview (fits a 1080p screen's window)
STRIP_SIDE = 88
_SAID = {
    None: "Not reviewed yet",
    tag_rule.CONFIRMED: "Accepted by you",
    tag_rule.REJECTED: "Rejected by you",
    tag_rule.MANUAL: "Added by you",
    tag_rule.IMPORTED: "Imported from your other apps",
}
ModelIndex = QModelIndex | QPersistentModelIndex


@dataclass
class _Step:
    """One accept or reject: the marks it replaced (for the strip) and, once written, the
    library's record of the change (for the undo)."""

    before: dict[str, str | None]
    change: MarkChange | None = field(default=None)


class _StripDelegate(PhotoDelegate):
    """A thumbnail with the user's mark on it (a green tick or a red cross), and "nearly"
    on the photos the model nearly gave the label."""

    marks: dict[str, str | None]
    near_rows: set[int]

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index: ModelIndex) -> None:
        super().paint(painter, option, index)
        ref = index.data(REF_ROLE)
        mark = self.marks.get(ref.fingerprint) if isinstance(ref, PhotoRef) else None
        rect: QRect = option.rect
        if index.row() in self.near_rows:
            painter.save()
            self._badge(painter, rect.adjusted(6, 6, -6, -6), "nearly")
            painter.restore()
        if mark is None:
            return
        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        rejected = mark == tag_rule.REJECTED
        badge = QRect(rect.left() + 6, rect.top() + 6, 22, 22)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(QColor(190, 40, 40) if rejected else QColor(40, 140, 60))
        painter.drawEllipse(badge)
        font = QFont(painter.font())
        font.setBold(True)
        painter.setFont(font)
        painter.setPen(QColor(255, 255, 255))
        painter.drawText(badge, Qt.AlignmentFlag.AlignCenter, "✗" if rejected else "✓")
        painter.restore()


class ReviewDialog(QDialog):
    """Review one label of a label set, photo by photo."""

    marks_changed = Signal()  # a mark was written or undone (the window refreshes)
    loaded = Signal()  # a queue is shown

    def __init__(
        self,
        services: Clipdesk,
        thumbnails: ThumbnailProvider,
        run: Run,
        label_sets: dict[str, list[str]],
        label_set: str = "",
        label: str = "",
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Review tags")
        self.services, self.thumbnails, self._run = services, thumbnails, run
        self.label_sets = label_sets
        self.queue: ReviewQueue | None = None
        self.items: list[ReviewItem] = []  # the queue's photos that can be shown
        self.marks: dict[str, str | None] = {}  # by content fingerprint, as the library keeps them
        self.undo_stack: list[_Step] = []
        self._ops: deque[tuple[Callable[[CancelToken], Any], Callable[[Any], None]]] = deque()
        self._busy = False
        self._load_number = 0
        self._preview_for: int | None = None

        self.set_combo = QComboBox()
        self.label_combo = QComboBox()
        self.order_combo = QComboBox()
        for key, name in ORDER_NAMES.items():
            self.order_combo.addItem(name, key)
        self.order_combo.setToolTip(
            "Least sure first: the photos closest to the model's decision, where your word "
            "helps most"
        )
        choose = QHBoxLayout()
        choose.addWidget(QLabel("Label set"))
        choose.addWidget(self.set_combo)
        choose.addWidget(QLabel("Label"))
        choose.addWidget(self.label_combo)
        choose.addWidget(QLabel("Order"))
        choose.addWidget(self.order_combo)
        choose.addStretch(1)

        self.preview = QLabel("Loading…")
        self.preview.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.preview.setMinimumSize(480, 320)
        self.preview.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self._image: QImage | None = None
        self.caption = QLabel()
        self.caption.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.caption.setWordWrap(True)
        self.mark_label = QLabel()
        self.mark_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        font = self.mark_label.font()
        font.setBold(True)
        self.mark_label.setFont(font)

        self.model = PhotoGridModel(self)
        self.delegate = _StripDelegate(thumbnails, self)
        self.delegate.side = STRIP_SIDE
        self.delegate.marks = self.marks
        self.delegate.near_rows = set()
        self.strip = QListView()
        self.strip.setModel(self.model)
        self.strip.setItemDelegate(self.delegate)
        self.strip.setViewMode(QListView.ViewMode.IconMode)
        self.strip.setFlow(QListView.Flow.LeftToRight)
        self.strip.setWrapping(False)
        self.strip.setMovement(QListView.Movement.Static)
        self.strip.setUniformItemSizes(True)
        self.strip.setGridSize(self.delegate.cell_size())
        self.strip.setSelectionMode(QListView.SelectionMode.ExtendedSelection)
        self.strip.setHorizontalScrollMode(QListView.ScrollMode.ScrollPerPixel)
        self.strip.setFixedHeight(self.delegate.cell_size().height() + 24)
        self.strip.installEventFilter(self)
        self.strip.selectionModel().currentChanged.connect(lambda *_: self._show_current())
        self.strip.selectionModel().selectionChanged.connect(lambda *_: self._update_buttons())
        thumbnails.ready.connect(self.model.thumbnail_ready)

        self.accept_button = QPushButton("Accept (Y)")
        self.reject_button = QPushButton("Reject (N)")
        self.skip_button = QPushButton("Skip (Space)")
        self.back_button = QPushButton("Back (←)")
        self.undo_button = QPushButton("Undo (Ctrl+Z)")
        self.close_button = QPushButton("Close")
        self.accept_button.clicked.connect(lambda: self.judge(tag_rule.CONFIRMED))
        self.reject_button.clicked.connect(lambda: self.judge(tag_rule.REJECTED))
        self.skip_button.clicked.connect(lambda: self.step(1))
        self.back_button.clicked.connect(lambda: self.step(-1))
        self.undo_button.clicked.connect(self.undo)
        self.close_button.clicked.connect(self.close)
        for button in (self.accept_button, self.reject_button, self.skip_button):
            button.setFocusPolicy(Qt.FocusPolicy.NoFocus)  # the keys stay the queue's
        for button in (self.back_button, self.undo_button, self.close_button):
            button.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.progress_label = QLabel()
        buttons = QHBoxLayout()
        buttons.addWidget(self.progress_label)
        buttons.addStretch(1)
        for button in (
            self.back_button,
            self.reject_button,
            self.accept_button,
            self.skip_button,
            self.undo_button,
            self.close_button,
        ):
            buttons.addWidget(button)

        layout = QVBoxLayout(self)
        layout.addLayout(choose)
        layout.addWidget(self.preview, 1)
        layout.addWidget(self.caption)
        layout.addWidget(self.mark_label)
        layout.addWidget(self.strip)
        layout.addLayout(buttons)
        self.resize(960, 760)

        self.set_combo.currentTextChanged.connect(lambda _: self._fill_labels(""))
        self.label_combo.currentTextChanged.connect(lambda _: self.reload())
        self.order_combo.currentIndexChanged.connect(lambda _: self.reload())
        self.show_label(label_sets, label_set, label)

    # -- the queue -------------------------------------------------------------------------

    def show_label(self, label_sets: dict[str, list[str]], label_set: str, label: str) -> None:
        """Review ``label`` of ``label_set`` (the window keeps one review view and shows
        it again on another label)."""
        self.label_sets = label_sets
        self.set_combo.blockSignals(True)
        self.set_combo.clear()
        self.set_combo.addItems(list(label_sets))
        if label_set in label_sets:
            self.set_combo.setCurrentText(label_set)
        self.set_combo.blockSignals(False)
        self._fill_labels(label)

    def _fill_labels(self, label: str) -> None:
        self.label_combo.blockSignals(True)
        self.label_combo.clear()
        self.label_combo.addItems(self.label_sets.get(self.set_combo.currentText(), []))
        if label:
            self.label_combo.setCurrentText(label)
        self.label_combo.blockSignals(False)
        self.reload()

    @property
    def order(self) -> str:
        return str(self.order_combo.currentData())

    def reload(self) -> None:
        """Compute the queue again (after the changes already given are written)."""
        label_set, label, order = (
            self.set_combo.currentText(),
            self.label_combo.currentText(),
            self.order,
        )
        if not label_set or not label:
            self._show_queue(None, {})
            self.preview.setText("No label set yet: create one, tag the library, then review.")
            return
        self._load_number += 1
        number = self._load_number
        self.preview.setPixmap(QPixmap())
        self.preview.setText("Finding the photos to review…")
        services = self.services

        def load(token: CancelToken) -> tuple[ReviewQueue, dict[int, PhotoRef]]:
            queue = services.review_queue(label_set, label, order, token)
            return queue, services.photo_refs([item.photo_id for item in queue.items])

        def loaded(result: tuple[ReviewQueue, dict[int, PhotoRef]]) -> None:
            if number == self._load_number:
                self._show_queue(*result)

        self._enqueue(load, loaded)

    def _show_queue(self, queue: ReviewQueue | None, refs: dict[int, PhotoRef]) -> None:
        items = [] if queue is None else [i for i in queue.items if i.photo_id in refs]
        self.queue = queue
        self.items = items
        self.marks.clear()
        self.marks.update({item.fingerprint: item.mark for item in items})
        self.delegate.near_rows = {row for row, item in enumerate(items) if not item.given}
        self.undo_stack.clear()
        self.model.set_photos(
            [refs[item.photo_id] for item in items], [item.probability for item in items]
        )
        if items:
            first = next((row for row, i in enumerate(items) if i.mark is None), 0)
            self.strip.setCurrentIndex(self.model.index(first))
            self.strip.setFocus()
        else:
            self._preview_for = None
            self._image = None
            self.preview.setPixmap(QPixmap())
            self.caption.setText("")
            self.mark_label.setText("")
            if queue is not None:
                self.preview.setText(
                    f"No photo was given “{queue.label}”, nor nearly: nothing to review."
                )
        self._update_progress()
        self._update_buttons()
        self.loaded.emit()

    # -- moving and judging ----------------------------------------------------------------

    @property
    def row(self) -> int:
        return self.strip.currentIndex().row()

    def step(self, by: int) -> None:
        row = self.row + by
        if 0 <= row < self.model.rowCount():
            self.strip.setCurrentIndex(self.model.index(row))

    def _selected_rows(self) -> list[int]:
        rows = sorted({i.row() for i in self.strip.selectionModel().selectedIndexes()})
        return rows if len(rows) > 1 else ([self.row] if self.row >= 0 else [])

    def judge(self, source: str) -> None:
        """Accept (confirmed) or reject the photo at hand, or all the selected ones; a
        single photo moves on to the next."""
        rows = self._selected_rows()
        if not rows or self.queue is None:
            return
        label = self.queue.label
        chosen = [self.items[r] for r in rows]
        step = _Step({item.fingerprint: self.marks.get(item.fingerprint) for item in chosen})
        self.undo_stack.append(step)
        for item in chosen:
            self.marks[item.fingerprint] = source
        ids = [item.photo_id for item in chosen]
        services = self.services

        def write(_: CancelToken) -> None:
            step.change = services.mark_tag(label, ids, source)

        self._enqueue(write, lambda _: self.marks_changed.emit())
        self._changed_rows(rows)
        if len(rows) == 1:
            self.step(1)

    def undo(self) -> None:
        if not self.undo_stack:
            return
        step = self.undo_stack.pop()
        self.marks.update(step.before)
        services = self.services

        def write(_: CancelToken) -> None:
            if step.change is not None:  # written before this runs: the changes go in order
                services.undo_mark(step.change)

        self._enqueue(write, lambda _: self.marks_changed.emit())
        rows = [r for r, item in enumerate(self.items) if item.fingerprint in step.before]
        self._changed_rows(rows)
        if rows:
            self.strip.setCurrentIndex(self.model.index(rows[0]))

    def _changed_rows(self, rows: list[int]) -> None:
        for row in rows:
            index = self.model.index(row)
            self.model.dataChanged.emit(index, index)
        self.strip.viewport().update()
        self._update_progress()
        self._show_mark()

    def _update_progress(self) -> None:
        total = len(self.items)
        done = sum(1 for item in self.items if self.marks.get(item.fingerprint))
        self.progress_label.setText(f"{done:,} of {total:,} reviewed")

    def _update_buttons(self) -> None:
        selected = len(self._selected_rows())
        several = f" {selected} selected" if selected > 1 else ""
        self.accept_button.setText(f"Accept{several} (Y)")
        self.reject_button.setText(f"Reject{several} (N)")
        has = bool(self.items)
        for button in (self.accept_button, self.reject_button, self.skip_button):
            button.setEnabled(has)
        self.back_button.setEnabled(has)

    # -- the photo at hand ------------------------------------------------------------------

    def _show_current(self) -> None:
        self._update_buttons()
        row = self.row
        ref = self.model.ref_at(row)
        if ref is None or self.queue is None:
            return
        item = self.items[row]
        how = "given" if item.given else "nearly given"
        self.caption.setText(
            f"{ref.path}\n“{self.queue.label}”: {how} by the model, "
            f"{item.probability:.0%} sure · photo {row + 1:,} of {len(self.items):,}"
        )
        self._show_mark()
        self._preview_for = ref.photo_id
        self._image = self.thumbnails.image(ref.fingerprint, ref.path)  # at once, small
        self._fit()
        path, photo_id = ref.path, ref.photo_id

        def decode(_: CancelToken) -> QImage:
            rgb = load_rgb(path, PREVIEW_SIDE)
            rgb.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE))
            data = rgb.tobytes()
            image = QImage(data, rgb.width, rgb.height, 3 * rgb.width, QImage.Format.Format_RGB888)
            return image.copy()  # own the pixels before ``data`` goes away

        def decoded(image: QImage) -> None:
            if self._preview_for == photo_id:
                self._image = image
                self._fit()

        def failed(message: str) -> None:
            if self._preview_for == photo_id and self._image is None:
                self.preview.setText(f"This photo cannot be shown: {message}")

        self._run(decode, decoded, "review preview", failed)

    def _show_mark(self) -> None:
        row = self.row
        if not 0 <= row < len(self.items):
            return
        mark = self.marks.get(self.items[row].fingerprint)
        self.mark_label.setText(_SAID[mark])
        color = {tag_rule.REJECTED: "#b42828", None: ""}.get(mark, "#2a8c3c")
        self.mark_label.setStyleSheet(f"color: {color}" if color else "")

    def _fit(self) -> None:
        if self._image is None or self._image.isNull():
            self.preview.setPixmap(QPixmap())
            self.preview.setText("Loading preview…")
            return
        ratio = self.devicePixelRatioF()
        scaled = self._image.scaled(
            self.preview.size() * ratio,
            Qt.AspectRatioMode.KeepAspectRatio,
            Qt.TransformationMode.SmoothTransformation,
        )
        pixmap = QPixmap.fromImage(scaled)
        pixmap.setDevicePixelRatio(ratio)
        self.preview.setPixmap(pixmap)

    def resizeEvent(self, event: Any) -> None:
        super().resizeEvent(event)
        self._fit()

    # -- keys ------------------------------------------------------------------------------

    def handle_key(self, event: QKeyEvent) -> bool:
        key = event.key()
        if event.matches(QKeySequence.StandardKey.Undo):
            self.undo()
        elif event.modifiers() & ~Qt.KeyboardModifier.KeypadModifier:
            return False  # Shift+arrows select in the strip; Ctrl+A selects all
        elif key in (Qt.Key.Key_Y, Qt.Key.Key_Return, Qt.Key.Key_Enter):
            self.judge(tag_rule.CONFIRMED)
        elif key in (Qt.Key.Key_N, Qt.Key.Key_Delete):
            self.judge(tag_rule.REJECTED)
        elif key in (Qt.Key.Key_Space, Qt.Key.Key_Right):
            self.step(1)
        elif key == Qt.Key.Key_Left:
            self.step(-1)
        else:
            return False
        return True

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if isinstance(event, QKeyEvent) and event.type() == QEvent.Type.KeyPress:
            return self.handle_key(event) or super().eventFilter(watched, event)
        return super().eventFilter(watched, event)

    def keyPressEvent(self, event: QKeyEvent) -> None:
        if not self.handle_key(event):
            super().keyPressEvent(event)

    # -- writing, in order --------------------------------------------------------------------

    def _enqueue(self, fn: Callable[[CancelToken], Any], done: Callable[[Any], None]) -> None:
        self._ops.append((fn, done))
        if not self._busy:
            self._next()

    def _next(self) -> None:
        if not self._ops:
            self._busy = False
            return
        self._busy = True
        fn, done = self._ops.popleft()

        def succeeded(result: Any) -> None:
            done(result)
            self._next()

        def failed(message: str) -> None:
            self.mark_label.setText(f"Not saved: {message}")
            self.mark_label.setStyleSheet("color: #b42828")
            self._next()

        # (the callbacks are connected before the worker starts: a finished signal
        # connected after could come first and be lost)
        self._run(fn, succeeded, "review", failed)

    @property
    def idle(self) -> bool:
        """Nothing is being written or loaded (for tests and for closing)."""
        return not self._busy and not self._ops
