"""The results grid: an item model of photo references, a delegate that paints
thumbnails, and a list view with a photo browser's keyboard and mouse habits."""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np
from PySide6.QtCore import (
    QAbstractListModel,
    QModelIndex,
    QPersistentModelIndex,
    QPoint,
    QRect,
    QSize,
    Qt,
    Signal,
)
from PySide6.QtGui import (
    QColor,
    QFont,
    QKeyEvent,
    QKeySequence,
    QPainter,
    QPalette,
    QPixmap,
    QPixmapCache,
    QWheelEvent,
)
from PySide6.QtWidgets import QListView, QStyle, QStyledItemDelegate, QStyleOptionViewItem, QWidget

from clipdesk.gui.thumbnails import ThumbnailProvider
from clipdesk.library.browsing import PhotoRef

REF_ROLE = Qt.ItemDataRole.UserRole + 1
SCORE_ROLE = Qt.ItemDataRole.UserRole + 2
_PADDING = 6
MIN_ZOOM, MAX_ZOOM, DEFAULT_ZOOM = 64, 384, 160

ModelIndex = QModelIndex | QPersistentModelIndex


class PhotoGridModel(QAbstractListModel):
    """Rows are photos. A search result (a few hundred) comes as :class:`PhotoRef` rows with
    scores; a listing of the library comes as photo ids only, and the rows the view asks for
    are fetched a page at a time, so a million photos cost one array, not a million objects."""

    PAGE = 256
    MAX_PAGES = 400  # about 100,000 rows kept as objects; older pages are fetched again

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self._refs: list[PhotoRef] | None = []
        self._ids: np.ndarray | None = None
        self._fetch: Callable[[list[int]], dict[int, PhotoRef]] | None = None
        self._pages: OrderedDict[int, list[PhotoRef | None]] = OrderedDict()
        self.scores: list[float] | None = None
        self._rows_of: dict[str, set[int]] = {}

    def set_photos(self, refs: list[PhotoRef], scores: list[float] | None = None) -> None:
        self.beginResetModel()
        self._refs, self._ids, self._fetch, self.scores = refs, None, None, scores
        self._pages.clear()
        self._rows_of = {}
        for row, ref in enumerate(refs):
            self._rows_of.setdefault(ref.fingerprint, set()).add(row)
        self.endResetModel()

    def set_ids(self, ids: np.ndarray, fetch: Callable[[list[int]], dict[int, PhotoRef]]) -> None:
        """A listing by id, in display order; ``fetch`` turns ids into refs (a DB query)."""
        self.beginResetModel()
        self._refs, self._ids, self._fetch, self.scores = None, ids, fetch, None
        self._pages.clear()
        self._rows_of = {}
        self.endResetModel()

    def rowCount(self, parent: ModelIndex = QModelIndex()) -> int:  # noqa: B008
        if parent.isValid():
            return 0
        return len(self._ids) if self._ids is not None else len(self._refs or [])

    @property
    def refs(self) -> list[PhotoRef]:
        """Every row as a ref: fetches them all, so for small lists and tests."""
        return [ref for row in range(self.rowCount()) if (ref := self.ref_at(row)) is not None]

    def ref_at(self, row: int) -> PhotoRef | None:
        if not 0 <= row < self.rowCount():
            return None
        if self._refs is not None:
            return self._refs[row]
        number = row // self.PAGE
        page = self._pages.get(number)
        if page is None:
            page = self._load_page(number)
        else:
            self._pages.move_to_end(number)
        return page[row - number * self.PAGE]

    def _load_page(self, number: int) -> list[PhotoRef | None]:
        assert self._ids is not None and self._fetch is not None
        start = number * self.PAGE
        ids = [int(i) for i in self._ids[start : start + self.PAGE]]
        found = self._fetch(ids)  # one indexed query for 256 rows: about a millisecond
        page = [found.get(pid) for pid in ids]  # None: gone since the listing was made
        for offset, ref in enumerate(page):
            if ref is not None:
                self._rows_of.setdefault(ref.fingerprint, set()).add(start + offset)
        self._pages[number] = page
        while len(self._pages) > self.MAX_PAGES:
            old_number, old = self._pages.popitem(last=False)
            for offset, ref in enumerate(old):
                if ref is not None:
                    self._rows_of.get(ref.fingerprint, set()).discard(
                        old_number * self.PAGE + offset
                    )
        return page

    def data(self, index: ModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        ref = self.ref_at(index.row())
        if ref is None:
            return None
        if role == REF_ROLE:
            return ref
        if role == SCORE_ROLE:
            return None if self.scores is None else self.scores[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            return os.path.basename(ref.path)
        if role == Qt.ItemDataRole.ToolTipRole:
            lines = [ref.path]
            if ref.width and ref.height:
                lines.append(f"{ref.width} × {ref.height} px")
            if self.scores is not None:
                lines.append(f"match score {self.scores[index.row()]:.3f}")
            return "\n".join(lines)
        return None

    def thumbnail_ready(self, fingerprint: str) -> None:
        for row in list(self._rows_of.get(fingerprint, ())):
            index = self.index(row)
            self.dataChanged.emit(index, index, [Qt.ItemDataRole.DecorationRole])


class PhotoDelegate(QStyledItemDelegate):
    """Paints a thumbnail fitted in a square cell, the selection, and the score on hover."""

    def __init__(self, thumbnails: ThumbnailProvider, parent: Any = None) -> None:
        super().__init__(parent)
        self.thumbnails = thumbnails
        self.side = DEFAULT_ZOOM

    def cell_size(self) -> QSize:
        return QSize(self.side + 2 * _PADDING, self.side + 2 * _PADDING)

    def sizeHint(self, option: QStyleOptionViewItem, index: ModelIndex) -> QSize:
        return self.cell_size()

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index: ModelIndex) -> None:
        ref = index.data(REF_ROLE)
        if not isinstance(ref, PhotoRef):
            return
        palette = option.palette
        rect: QRect = option.rect
        state = option.state
        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        if state & QStyle.StateFlag.State_Selected:
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(palette.color(QPalette.ColorRole.Highlight))
            painter.drawRoundedRect(rect.adjusted(1, 1, -1, -1), 6, 6)
        elif state & QStyle.StateFlag.State_MouseOver:
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(palette.color(QPalette.ColorRole.Midlight))
            painter.drawRoundedRect(rect.adjusted(1, 1, -1, -1), 6, 6)
        cell = rect.adjusted(_PADDING, _PADDING, -_PADDING, -_PADDING)
        pixmap = self._pixmap(ref, cell.size(), painter.device().devicePixelRatioF())
        if pixmap is None:
            failed = ref.fingerprint in self.thumbnails.failures
            self._placeholder(painter, cell, palette, failed)
        else:
            logical = pixmap.deviceIndependentSize().toSize()
            x = cell.x() + (cell.width() - logical.width()) // 2
            y = cell.y() + (cell.height() - logical.height()) // 2
            painter.drawPixmap(x, y, pixmap)
        score = index.data(SCORE_ROLE)
        if score is not None and state & QStyle.StateFlag.State_MouseOver:
            self._badge(painter, cell, f"{score:.3f}")
        painter.restore()

    def _pixmap(self, ref: PhotoRef, size: QSize, ratio: float) -> QPixmap | None:
        key = f"{ref.fingerprint}:{size.width()}x{size.height()}@{ratio:g}"
        cached = QPixmap()
        if QPixmapCache.find(key, cached) and not cached.isNull():
            return cached
        image = self.thumbnails.image(ref.fingerprint, ref.path)
        if image is None:
            return None
        scaled = image.scaled(
            size * ratio,
            Qt.AspectRatioMode.KeepAspectRatio,
            Qt.TransformationMode.SmoothTransformation,
        )
        pixmap = QPixmap.fromImage(scaled)
        pixmap.setDevicePixelRatio(ratio)
        QPixmapCache.insert(key, pixmap)
        return pixmap

    @staticmethod
    def _placeholder(painter: QPainter, cell: QRect, palette: QPalette, failed: bool) -> None:
        painter.setPen(Qt.PenStyle.NoPen)
        color = palette.color(QPalette.ColorRole.Mid if failed else QPalette.ColorRole.Button)
        painter.setBrush(color)
        painter.drawRoundedRect(cell.adjusted(8, 8, -8, -8), 4, 4)
        if failed:
            painter.setPen(palette.color(QPalette.ColorRole.ButtonText))
            painter.drawText(cell, Qt.AlignmentFlag.AlignCenter, "cannot\nshow")

    @staticmethod
    def _badge(painter: QPainter, cell: QRect, text: str) -> None:
        font = QFont(painter.font())
        font.setPointSizeF(max(font.pointSizeF() * 0.85, 7.0))
        painter.setFont(font)
        metrics = painter.fontMetrics()
        width = metrics.horizontalAdvance(text) + 10
        height = metrics.height() + 4
        badge = QRect(cell.right() - width - 4, cell.bottom() - height - 4, width, height)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(QColor(0, 0, 0, 170))
        painter.drawRoundedRect(badge, 4, 4)
        painter.setPen(QColor(255, 255, 255))
        painter.drawText(badge, Qt.AlignmentFlag.AlignCenter, text)


class PhotoGridView(QListView):
    """Arrows move, Enter opens, Space previews, Ctrl+C copies the path, double-click
    finds similar photos, Ctrl+wheel zooms; a context menu on every photo."""

    open_requested = Signal(object)  # PhotoRef
    similar_requested = Signal(object)
    preview_requested = Signal(object)
    copy_requested = Signal(object)
    menu_requested = Signal(object, QPoint)  # PhotoRef, global position
    zoom_requested = Signal(int)  # +1 / -1 steps

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setViewMode(QListView.ViewMode.IconMode)
        self.setMovement(QListView.Movement.Static)
        self.setResizeMode(QListView.ResizeMode.Adjust)
        self.setUniformItemSizes(True)
        self.setLayoutMode(QListView.LayoutMode.Batched)
        self.setBatchSize(2000)
        self.setSelectionMode(QListView.SelectionMode.ExtendedSelection)
        self.setVerticalScrollMode(QListView.ScrollMode.ScrollPerPixel)
        self.verticalScrollBar().setSingleStep(24)
        self.setMouseTracking(True)
        self.setDragEnabled(False)
        self.setWordWrap(False)
        self.setSpacing(2)
        self.doubleClicked.connect(self._double_clicked)

    def current_ref(self) -> PhotoRef | None:
        ref = self.currentIndex().data(REF_ROLE)
        return ref if isinstance(ref, PhotoRef) else None

    def selected_refs(self) -> list[PhotoRef]:
        """The selected photos, in the grid's order."""
        rows = sorted(index.row() for index in self.selectionModel().selectedIndexes())
        refs = [self.model().index(row, 0).data(REF_ROLE) for row in rows]
        return [ref for ref in refs if isinstance(ref, PhotoRef)]

    def _double_clicked(self, index: QModelIndex) -> None:
        ref = index.data(REF_ROLE)
        if isinstance(ref, PhotoRef):
            self.similar_requested.emit(ref)

    def keyPressEvent(self, event: QKeyEvent) -> None:
        ref = self.current_ref()
        if ref is not None:
            if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
                self.open_requested.emit(ref)
                return
            if event.key() == Qt.Key.Key_Space:
                self.preview_requested.emit(ref)
                return
            if event.matches(QKeySequence.StandardKey.Copy):
                self.copy_requested.emit(ref)
                return
        super().keyPressEvent(event)

    def wheelEvent(self, event: QWheelEvent) -> None:
        if event.modifiers() & Qt.KeyboardModifier.ControlModifier:
            steps = event.angleDelta().y()
            if steps:
                self.zoom_requested.emit(1 if steps > 0 else -1)
            event.accept()
            return
        super().wheelEvent(event)

    def contextMenuEvent(self, event: Any) -> None:
        index = self.indexAt(event.pos())
        ref = index.data(REF_ROLE)
        if isinstance(ref, PhotoRef):
            selection = self.selectionModel()
            if selection.isSelected(index):  # keep a selection for "More like these"
                selection.setCurrentIndex(index, selection.SelectionFlag.NoUpdate)
            else:
                self.setCurrentIndex(index)
            self.menu_requested.emit(ref, event.globalPos())
