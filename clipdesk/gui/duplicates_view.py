"""The duplicates view: the library's groups of exact copies and near-duplicates, one group
at a time side by side, with what differs between its photos; the photo to keep marked
(the suggestion first, the user's word after); a threshold slider that regroups; and a
move to the system trash of what is not kept, only after the user confirms.

Keys: Up/Down or J/K between groups, Left/Right between the group's photos, Space flips
"Keep" on the photo at hand, A keeps all of the group, Enter asks to move what is not
kept to the trash. The neighbour pass, the grouping and the trash run off the GUI thread;
a regroup at another threshold reuses the neighbour lists (no second pass)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from PySide6.QtCore import QPoint, QSize, Qt, QTimer, Signal
from PySide6.QtGui import (
    QCloseEvent,
    QIcon,
    QImage,
    QKeyEvent,
    QMouseEvent,
    QPainter,
    QPaintEvent,
    QPixmap,
)
from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QFrame,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSlider,
    QStyle,
    QStyleOptionSlider,
    QVBoxLayout,
    QWidget,
)

from clipdesk.duplicates.finding import DuplicateGroup, DuplicateReport, Member
from clipdesk.duplicates.trash import Trashed, TrashReport
from clipdesk.errors import NotIndexedError
from clipdesk.gui.thumbnails import ThumbnailProvider
from clipdesk.gui.workers import TaskRunner, WorkerToken
from clipdesk.progress import Progress
from clipdesk.services import Clipdesk
from clipdesk.wording import human_size, plural

THUMB_SIDE = 200
LIST_ICON = 48
FAILURES_SHOWN = 8  # files named in the failure message itself; all of them in its details
DEBOUNCE_MS = 200  # the slider regroups once it rests this long
SLIDER_SCALE = 1000  # the slider's steps: thousandths of a cosine
SLIDER_SPAN = 0.15  # how far below the library's own threshold the slider reaches


class ThresholdSlider(QSlider):
    """A horizontal slider with the library's derived threshold marked under its groove."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(Qt.Orientation.Horizontal, parent)
        self.marked: int | None = None

    def paintEvent(self, event: QPaintEvent) -> None:
        super().paintEvent(event)
        if self.marked is None or not self.minimum() <= self.marked <= self.maximum():
            return
        option = QStyleOptionSlider()
        self.initStyleOption(option)
        groove = self.style().subControlRect(
            QStyle.ComplexControl.CC_Slider, option, QStyle.SubControl.SC_SliderGroove, self
        )
        handle = self.style().subControlRect(
            QStyle.ComplexControl.CC_Slider, option, QStyle.SubControl.SC_SliderHandle, self
        )
        span = groove.width() - handle.width()
        x = groove.left() + handle.width() // 2
        x += QStyle.sliderPositionFromValue(self.minimum(), self.maximum(), self.marked, span)
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(self.palette().highlight())
        bottom = self.height() - 1
        painter.drawPolygon([QPoint(x, bottom - 6), QPoint(x - 5, bottom), QPoint(x + 5, bottom)])
        painter.end()


class _PhotoCard(QFrame):
    """One photo of the group: its thumbnail, "Keep", and its facts (those that differ
    within the group in bold)."""

    clicked = Signal()

    def __init__(self, member: Member, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.member = member
        self.setObjectName("card")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.setFixedWidth(THUMB_SIDE + 44)
        self.thumb = QLabel("…")
        self.thumb.setFixedSize(THUMB_SIDE, THUMB_SIDE)
        self.thumb.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.badge = QLabel()
        self.badge.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.keep_check = QCheckBox("Keep")
        self.keep_check.setFocusPolicy(Qt.FocusPolicy.NoFocus)  # Space is the view's
        self.facts = QLabel()
        self.facts.setTextFormat(Qt.TextFormat.RichText)
        self.facts.setWordWrap(True)
        self.facts.setFixedWidth(THUMB_SIDE + 20)
        self.facts.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        layout = QVBoxLayout(self)
        layout.addWidget(self.thumb, 0, Qt.AlignmentFlag.AlignHCenter)
        top = QHBoxLayout()
        top.addWidget(self.keep_check)
        top.addStretch(1)
        top.addWidget(self.badge)
        layout.addLayout(top)
        layout.addWidget(self.facts)
        layout.addStretch(1)

    def set_image(self, image: QImage | None, failed: str = "") -> None:
        if image is None:
            self.thumb.setText(failed or "…")
            self.thumb.setToolTip(failed)
            return
        pixmap = QPixmap.fromImage(image).scaled(
            THUMB_SIDE,
            THUMB_SIDE,
            Qt.AspectRatioMode.KeepAspectRatio,
            Qt.TransformationMode.SmoothTransformation,
        )
        self.thumb.setPixmap(pixmap)

    suggested = False

    def set_state(self, keep: bool, focused: bool) -> None:
        if keep:
            self.badge.setText("★ suggested" if self.suggested else "")
            self.badge.setStyleSheet("")
        else:
            self.badge.setText("to the trash")
            self.badge.setStyleSheet("color: #b22222; font-weight: bold;")
        self.keep_check.blockSignals(True)
        self.keep_check.setChecked(keep)
        self.keep_check.blockSignals(False)
        highlight = self.palette().highlight().color().name()
        border = f"3px solid {highlight}" if focused else "3px solid transparent"
        back = "" if keep else "background: rgba(200, 60, 60, 40);"
        self.setStyleSheet(f"QFrame#card {{ border: {border}; border-radius: 6px; {back} }}")

    def mousePressEvent(self, event: QMouseEvent) -> None:
        self.clicked.emit()
        super().mousePressEvent(event)


def fact_rows(group: DuplicateGroup) -> list[tuple[str, list[str]]]:
    """The facts shown under each photo, row by row (a name, one value per member)."""
    members = [m.facts for m in group.members]
    kept = group.kept.facts.fingerprint

    def pixels(w: int | None, h: int | None) -> str:
        return f"{w} × {h} ({w * h / 1e6:.1f} MP)" if w and h else "unknown"

    def date(taken: float, exif: bool) -> str:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(taken))
        return stamp if exif else f"{stamp} (file date)"

    return [
        ("Name", [os.path.basename(f.path) for f in members]),
        ("Folder", [f.folder for f in members]),
        ("Pixels", [pixels(f.width, f.height) for f in members]),
        ("Size", [f"{human_size(f.size)} ({f.size:,} bytes)" for f in members]),
        ("Date", [date(f.taken_at, f.taken_from_exif) for f in members]),
        ("Camera", [f.camera or "—" for f in members]),
        ("Sharpness", ["—" if f.sharpness is None else f"{f.sharpness:.3f}" for f in members]),
        (
            "Likeness",
            [
                "exact copy" if m.facts.fingerprint == kept else f"{m.similarity:.4f}"
                for m in group.members
            ],
        ),
    ]


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class DuplicatesDialog(QDialog):
    """Review the library's duplicates, keep the best, trash the rest (confirmed)."""

    loaded = Signal()  # groups are shown (after a load, a regroup or a trash)
    trashed = Signal(object)  # a TrashReport: photos left the library (the window refreshes)

    def __init__(
        self,
        services: Clipdesk,
        thumbnails: ThumbnailProvider,
        runner: TaskRunner,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Find duplicates")
        self.services, self.thumbnails, self.runner = services, thumbnails, runner
        self.report: DuplicateReport | None = None
        self.groups: list[DuplicateGroup] = []
        self.group_row = -1
        self.photo_row = 0
        self.choice: dict[int, bool] = {}  # photo id -> kept, where the user said so
        self.derived: float | None = None
        self.exact_only = False
        self._busy = False
        self._pending: float | None = None  # a regroup asked for while one ran
        self._compare: Any = None  # the running neighbour pass (its worker)
        self._cards: list[_PhotoCard] = []

        self.slider = ThresholdSlider()
        self.slider.setRange(850, SLIDER_SCALE)
        self.slider.setFocusPolicy(Qt.FocusPolicy.NoFocus)  # the arrows move in the groups
        self.slider.setEnabled(False)
        self.threshold_label = QLabel()
        width = self.threshold_label.fontMetrics().horizontalAdvance("0.000 (library's own)")
        self.threshold_label.setMinimumWidth(width + 8)  # the slider keeps its length
        self.how_label = QLabel()  # how the library's own threshold was chosen
        self.how_label.setEnabled(False)  # greyed: an explanation
        self.how_label.setWordWrap(True)
        self.default_button = QPushButton("Library's own")
        self.default_button.setToolTip("Back to the threshold derived from this library")
        self.default_button.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.default_button.setEnabled(False)
        self.default_button.clicked.connect(self._to_default)
        self._debounce = QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(DEBOUNCE_MS)
        self._debounce.timeout.connect(lambda: self.regroup(self.threshold))
        self.slider.valueChanged.connect(self._slid)
        top = QHBoxLayout()
        top.addWidget(QLabel("Alike from"))
        top.addWidget(self.slider, 1)
        top.addWidget(self.threshold_label)
        top.addWidget(self.default_button)

        self.group_list = QListWidget()
        self.group_list.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.group_list.setFixedWidth(260)
        self.group_list.setIconSize(QSize(LIST_ICON, LIST_ICON))
        self.group_list.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.group_list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.group_list.setSpacing(2)
        self.group_list.currentRowChanged.connect(self._group_chosen)
        self.header = QLabel()
        self.header.setWordWrap(True)
        self.header.setTextFormat(Qt.TextFormat.RichText)
        self.row_widget = QWidget()
        self.row_layout = QHBoxLayout(self.row_widget)
        self.row_layout.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
        self.photo_area = QScrollArea()
        self.photo_area.setWidgetResizable(True)
        self.photo_area.setWidget(self.row_widget)
        self.photo_area.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        right = QVBoxLayout()
        right.addWidget(self.header)
        right.addWidget(self.photo_area, 1)
        middle = QHBoxLayout()
        middle.addWidget(self.group_list)
        middle.addLayout(right, 1)

        self.progress = QProgressBar()
        self.progress.setMaximumWidth(200)
        self.progress.hide()
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.cancel_button.clicked.connect(self.cancel)
        self.cancel_button.hide()
        self.summary = QLabel("Comparing the photos…")
        self.keep_all_button = QPushButton("Keep all (A)")
        self.trash_button = QPushButton("Move to trash… (Enter)")
        self.close_button = QPushButton("Close")
        self.log_button = QPushButton("Trashed before…")
        self.log_button.setToolTip("What clipdesk moved to the trash, and where each went")
        self.log_button.clicked.connect(self.show_trash_log)
        self.keep_all_button.clicked.connect(self.keep_all)
        self.trash_button.clicked.connect(self.confirm_trash)
        self.close_button.clicked.connect(self.close)
        for button in (
            self.log_button,
            self.keep_all_button,
            self.trash_button,
            self.close_button,
        ):
            button.setFocusPolicy(Qt.FocusPolicy.NoFocus)
            button.setAutoDefault(False)
        bottom = QHBoxLayout()
        bottom.addWidget(self.summary, 1)
        bottom.addWidget(self.progress)
        bottom.addWidget(self.cancel_button)
        bottom.addWidget(self.log_button)
        bottom.addWidget(self.keep_all_button)
        bottom.addWidget(self.trash_button)
        bottom.addWidget(self.close_button)
        keys = QLabel(
            "↑↓ or J/K: group · ←→: photo · Space: keep or not · A: keep all · "
            "Enter: move what is not kept to the trash"
        )
        keys.setEnabled(False)  # greyed: a hint

        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.how_label)
        layout.addLayout(middle, 1)
        layout.addLayout(bottom)
        layout.addWidget(keys)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        thumbnails.ready.connect(self._thumbnail_ready)
        self.resize(1100, 720)
        self._update_buttons()

    # -- loading ----------------------------------------------------------------------------

    @property
    def threshold(self) -> float:
        return self.slider.value() / SLIDER_SCALE

    @property
    def idle(self) -> bool:
        return not self._busy and self._compare is None and not self._debounce.isActive()

    def load(self) -> None:
        """Compare the photos (the neighbour pass, with progress and cancel), then group
        them at the library's own threshold (or the one on the slider, once moved)."""
        if self._compare is not None or self._busy:
            return
        self.summary.setText("Comparing the photos…")
        self.progress.setRange(0, 0)
        self.progress.show()
        self.cancel_button.show()
        self.exact_only = False
        services = self.services

        def compare(token: WorkerToken) -> Any:
            return services.compare_photos(token)

        def compared(_: object) -> None:
            self.regroup(None if self.derived is None else self.threshold)

        def failed(message: str) -> None:
            self.exact_only = True
            self.summary.setText(f"{message}: showing exact copies only.")
            self.regroup(None)

        def finished() -> None:
            worker = self._compare
            self._compare = None
            self.progress.hide()
            self.cancel_button.hide()
            if worker is not None and worker.token.cancelled:
                self.summary.setText("Comparing stopped. Close, or open again to go on.")
            self._update_buttons()

        self._compare = self.runner.start(
            compare,
            name="compare photos",
            on_yield=self._progressed,
            on_success=compared,
            on_failure=failed,
            on_finish=finished,
        )

    def _progressed(self, progress: Progress) -> None:
        self.progress.setRange(0, max(progress.total, 1))
        self.progress.setValue(progress.done)
        self.summary.setText(f"Comparing the photos… {progress.done:,} of {progress.total:,}")

    def cancel(self) -> None:
        if self._compare is not None:
            self._compare.cancel()

    def regroup(self, threshold: float | None) -> None:
        """Group again at ``threshold`` (None: the library's own); one at a time, the
        latest wins."""
        if self._busy:
            self._pending = threshold
            return
        self._busy = True
        self._update_buttons()
        services, exact = self.services, self.exact_only

        def group(_: WorkerToken) -> DuplicateReport:
            try:
                return services.duplicates(None, threshold, exact)
            except NotIndexedError:
                return services.duplicates(None, None, True)

        def done() -> None:
            self._busy = False
            if self._pending is not None:
                pending, self._pending = self._pending, None
                self.regroup(pending)
            self._update_buttons()

        self.runner.start(
            group,
            name="group duplicates",
            on_success=self._show_report,
            on_failure=lambda message: self.summary.setText(message),
            on_finish=done,
        )

    def _show_report(self, report: DuplicateReport) -> None:
        self.report = report
        if report.threshold is not None and report.threshold.derived:
            self.derived = report.threshold.value
            value = round(report.threshold.value * SLIDER_SCALE)
            self.slider.blockSignals(True)
            self.slider.setRange(
                max(1, min(value, SLIDER_SCALE) - round(SLIDER_SPAN * SLIDER_SCALE)),
                SLIDER_SCALE,
            )
            self.slider.setValue(value)
            self.slider.blockSignals(False)
            self.slider.marked = value
            how = report.threshold.how
            self.slider.setToolTip(f"Library's own: {report.threshold.value:.3f}, {how}")
            self.how_label.setText(f"Library's own threshold (▲): {how}.")
            self.slider.update()
        self.slider.setEnabled(report.threshold is not None)
        self._show_threshold()
        current = (
            self.groups[self.group_row].key if 0 <= self.group_row < len(self.groups) else None
        )
        self.groups = report.groups
        self.group_list.blockSignals(True)
        self.group_list.clear()
        for group in self.groups:
            item = QListWidgetItem(self._group_line(group))
            item.setToolTip(group.kept.path)
            self._set_icon(item, group)
            self.group_list.addItem(item)
        self.group_list.blockSignals(False)
        keys = [g.key for g in self.groups]
        row = keys.index(current) if current in keys else 0 if self.groups else -1
        self.group_list.blockSignals(True)  # (the list may have made its first row current)
        self.group_list.setCurrentRow(row)
        self.group_list.blockSignals(False)
        self.group_row = row
        self.photo_row = 0
        self._show_group()  # the group's photos as they are now, even under the same key
        self._update_summary()
        if self._after_trash:  # what the trash did, said once, before the new count
            self.summary.setText(f"{self._after_trash} {self.summary.text()}")
            self._after_trash = ""
        self._update_buttons()
        self.loaded.emit()

    def _show_threshold(self) -> None:
        if self.report is None or self.report.threshold is None:
            self.threshold_label.setText("exact copies only")
            self.how_label.setText("Near-duplicates need the library indexed.")
            self.default_button.setEnabled(False)
            return
        mine = self.derived is not None and self.slider.value() == self.slider.marked
        self.threshold_label.setText(f"{self.threshold:.3f}" + (" (library's own)" if mine else ""))
        self.default_button.setEnabled(not mine and self.derived is not None)

    def _slid(self, _: int) -> None:
        self._show_threshold()
        self._debounce.start()

    def _to_default(self) -> None:
        if self.slider.marked is not None:
            self.slider.setValue(self.slider.marked)

    # -- the choice --------------------------------------------------------------------------

    def kept_ids(self, group: DuplicateGroup) -> list[int]:
        """The photos of ``group`` kept: the user's word where given, else the suggestion
        (a group left with none, after a regroup split it, falls back to the suggestion)."""
        kept = [m.photo_id for m in group.members if self.choice.get(m.photo_id, m.keep)]
        return kept or [group.kept.photo_id]

    def to_drop(self) -> list[tuple[DuplicateGroup, list[Member]]]:
        """Each group's photos not kept (groups with none left out)."""
        out = [(g, g.to_drop(self.kept_ids(g))) for g in self.groups]
        return [(g, drop) for g, drop in out if drop]

    def _group_line(self, group: DuplicateGroup) -> str:
        kind = "exact" if group.exact else "burst" if group.burst else "alike"
        freed = group.freed(self.kept_ids(group))
        name = os.path.basename(group.kept.path)
        return f"{name}\n{len(group.members)} photos · {kind} · {human_size(freed)} to free"

    def flip(self) -> None:
        """Keep, or not, the photo at hand (a group keeps at least one)."""
        group = self.current_group
        if group is None:
            return
        member = group.members[self.photo_row]
        kept = set(self.kept_ids(group))
        if member.photo_id in kept and len(kept) == 1:
            self.summary.setText("Each group keeps at least one photo.")
            return
        self.choice[member.photo_id] = member.photo_id not in kept
        self._choice_changed()

    def keep_all(self) -> None:
        group = self.current_group
        if group is None:
            return
        for member in group.members:
            self.choice[member.photo_id] = True
        self._choice_changed()

    def _set_keep(self, row: int, keep: bool) -> None:
        self.photo_row = row
        group = self.current_group
        if group is not None and (keep != (group.members[row].photo_id in self.kept_ids(group))):
            self.flip()
        else:
            self._paint_cards()

    def _choice_changed(self) -> None:
        item = self.group_list.item(self.group_row)
        group = self.current_group
        if item is not None and group is not None:
            item.setText(self._group_line(group))
        self._paint_cards()
        self._update_summary()

    def _update_summary(self) -> None:
        if self.report is None:
            return
        drops = self.to_drop()
        count = sum(len(d) for _, d in drops)
        size = sum(m.facts.size for _, d in drops for m in d)
        if not self.groups:
            self.summary.setText(f"No duplicates among {plural(self.report.photos, 'photo')}.")
        else:
            self.summary.setText(
                f"{plural(len(self.groups), 'group')} · {plural(count, 'photo')} not kept · "
                f"{human_size(size)} to free"
            )
        self._update_buttons()

    def _update_buttons(self) -> None:
        has = bool(self.groups)
        self.keep_all_button.setEnabled(has)
        self.trash_button.setEnabled(has and not self._busy and bool(self.to_drop()))

    # -- the group at hand -------------------------------------------------------------------

    @property
    def current_group(self) -> DuplicateGroup | None:
        return self.groups[self.group_row] if 0 <= self.group_row < len(self.groups) else None

    def _group_chosen(self, row: int) -> None:
        if row == self.group_row:
            return
        self.group_row = row
        self.photo_row = 0
        self._show_group()

    def _show_group(self) -> None:
        for card in self._cards:  # out of the row now; deleted when the event loop runs
            card.hide()
            self.row_layout.removeWidget(card)
            card.deleteLater()
        self._cards = []
        group = self.current_group
        if group is None:
            self.header.setText("")
            return
        badges = []
        if group.exact:
            badges.append("<b style='color:#1c6fb8'>[exact copies]</b>")
        if group.burst:
            badges.append("<b style='color:#a0522d'>[burst]</b>")
        why = "; ".join(group.why)
        self.header.setText(
            f"Group {self.group_row + 1} of {len(self.groups)} {' '.join(badges)}<br>"
            f"<span>Suggested to keep: <b>{_escape(os.path.basename(group.kept.path))}</b>"
            f"{' — ' + _escape(why) if why else ''}</span>"
        )
        rows = fact_rows(group)
        for i, member in enumerate(group.members):
            card = _PhotoCard(member, self.row_widget)
            lines = []
            metrics = card.facts.fontMetrics()
            for name, values in rows:
                value = values[i]
                if name == "Folder":  # the end of a path tells folders apart
                    value = metrics.elidedText(
                        value, Qt.TextElideMode.ElideMiddle, THUMB_SIDE + 20 - 60
                    )
                if name == "Name":
                    value = metrics.elidedText(
                        value, Qt.TextElideMode.ElideMiddle, THUMB_SIDE + 20 - 50
                    )
                value = _escape(value)
                differs = i > 0 and values[i] != values[0]  # from the suggested photo's
                lines.append(f"{name}: <b>{value}</b>" if differs else f"{name}: {value}")
            card.facts.setText("<br>".join(lines))
            card.facts.setToolTip(member.path)
            card.suggested = i == 0
            card.keep_check.toggled.connect(lambda on, row=i: self._set_keep(row, on))
            card.clicked.connect(lambda row=i: self._focus_photo(row))
            fingerprint = member.facts.fingerprint
            card.set_image(
                self.thumbnails.image(fingerprint, member.path),
                self.thumbnails.failures.get(fingerprint, ""),
            )
            self.row_layout.addWidget(card)
            card.show()  # now, not when the event loop next runs
            self._cards.append(card)
        self._paint_cards()

    def _paint_cards(self) -> None:
        group = self.current_group
        if group is None:
            return
        kept = set(self.kept_ids(group))
        for i, card in enumerate(self._cards):
            card.set_state(card.member.photo_id in kept, i == self.photo_row)
        if 0 <= self.photo_row < len(self._cards):
            self.photo_area.ensureWidgetVisible(self._cards[self.photo_row])

    def _focus_photo(self, row: int) -> None:
        self.photo_row = row
        self._paint_cards()

    def _set_icon(self, item: QListWidgetItem, group: DuplicateGroup) -> None:
        image = self.thumbnails.image(group.kept.facts.fingerprint, group.kept.path)
        if image is not None:  # centred on a square, so the lines of text align
            side = max(image.width(), image.height())
            square = QPixmap(side, side)
            square.fill(Qt.GlobalColor.transparent)
            painter = QPainter(square)
            painter.drawImage((side - image.width()) // 2, (side - image.height()) // 2, image)
            painter.end()
            item.setIcon(QIcon(square))

    def _thumbnail_ready(self, fingerprint: str) -> None:
        for row, group in enumerate(self.groups):
            item = self.group_list.item(row)
            if group.kept.facts.fingerprint == fingerprint and item is not None:
                self._set_icon(item, group)
        for card in self._cards:
            if card.member.facts.fingerprint == fingerprint:
                card.set_image(
                    self.thumbnails.image(fingerprint, card.member.path),
                    self.thumbnails.failures.get(fingerprint, ""),
                )

    def step_group(self, by: int) -> None:
        row = self.group_row + by
        if 0 <= row < len(self.groups):
            self.group_list.setCurrentRow(row)

    def step_photo(self, by: int) -> None:
        row = self.photo_row + by
        if 0 <= row < len(self._cards):
            self._focus_photo(row)

    def keyPressEvent(self, event: QKeyEvent) -> None:
        key = event.key()
        plain = not event.modifiers() & ~Qt.KeyboardModifier.KeypadModifier
        actions: dict[int, Callable[[], None]] = {
            Qt.Key.Key_Up: lambda: self.step_group(-1),
            Qt.Key.Key_K: lambda: self.step_group(-1),
            Qt.Key.Key_Down: lambda: self.step_group(1),
            Qt.Key.Key_J: lambda: self.step_group(1),
            Qt.Key.Key_Left: lambda: self.step_photo(-1),
            Qt.Key.Key_Right: lambda: self.step_photo(1),
            Qt.Key.Key_Space: self.flip,
            Qt.Key.Key_A: self.keep_all,
            Qt.Key.Key_Return: self.confirm_trash,
            Qt.Key.Key_Enter: self.confirm_trash,
        }
        action = actions.get(key) if plain else None
        if action is None:
            super().keyPressEvent(event)  # Escape closes
            return
        action()

    # -- the trash ---------------------------------------------------------------------------

    def confirm_trash(self) -> None:
        """Ask, naming how many photos and how much space; only a yes moves anything."""
        drops = self.to_drop()
        if not drops or self._busy:
            return
        count = sum(len(d) for _, d in drops)
        size = sum(m.facts.size for _, d in drops for m in d)
        box = QMessageBox(self)
        box.setIcon(QMessageBox.Icon.Question)
        box.setWindowTitle("Move to trash")
        box.setText(
            f"Move {plural(count, 'photo')} ({human_size(size)}) from "
            f"{plural(len(drops), 'group')} to the system trash?"
        )
        box.setInformativeText(
            "The photos kept in each group stay where they are. Those moved can be restored "
            "from the system trash; clipdesk forgets them."
        )
        box.setDetailedText("\n".join(m.path for _, d in drops for m in d))
        box.setStandardButtons(QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Cancel)
        box.setDefaultButton(QMessageBox.StandardButton.Cancel)
        box.button(QMessageBox.StandardButton.Yes).setText("Move to trash")
        self.confirmation = box  # for tests: the box while it is asking
        answer = box.exec()
        self.confirmation = None
        if answer == QMessageBox.StandardButton.Yes:
            self.trash({g.key: self.kept_ids(g) for g, _ in drops}, [g for g, _ in drops])

    confirmation: QMessageBox | None = None

    def trash(self, keep: dict[int, Sequence[int]], groups: list[DuplicateGroup]) -> None:
        self._busy = True
        self._update_buttons()
        self.summary.setText("Moving to the trash…")
        services = self.services

        def move(token: WorkerToken) -> TrashReport:
            return services.trash_duplicates(groups, keep, token)

        def moved(report: TrashReport) -> None:
            self.last_trash = report
            freed = sum(t.size for t in report.trashed)
            said = (
                f"Moved {plural(len(report.trashed), 'photo')} ({human_size(freed)}) to the trash."
            )
            if report.failed:
                box = QMessageBox(self)
                box.setIcon(QMessageBox.Icon.Warning)
                box.setWindowTitle("Some photos were not moved")
                stuck = len(report.failed)
                box.setText(
                    f"{said} {plural(stuck, 'photo')} could not be moved; "
                    f"{'it stays' if stuck == 1 else 'they stay'} where "
                    f"{'it is' if stuck == 1 else 'they are'}:"
                )
                lines = [f"{os.path.basename(p)}: {why}" for p, why in report.failed]
                more = f"\n… and {stuck - FAILURES_SHOWN} more (Show Details)"
                box.setInformativeText(
                    "\n".join(lines[:FAILURES_SHOWN]) + (more if stuck > FAILURES_SHOWN else "")
                )
                box.setDetailedText("\n".join(f"{path}: {why}" for path, why in report.failed))
                self.failure_box = box
                box.open()  # not modal to the test or the user: the list is there to read
            self.trashed.emit(report)
            self._after_trash = said

        def finished() -> None:
            self._busy = False
            self.regroup(None if self.derived is None else self.threshold)

        self.runner.start(
            move,
            name="trash duplicates",
            on_success=moved,
            on_failure=lambda message: self.summary.setText(f"Nothing was moved: {message}"),
            on_finish=finished,
        )

    def show_trash_log(self) -> None:
        """The undo list: each photo moved to the trash, when, and where it went (restore
        it from the system trash)."""
        services = self.services

        def shown(entries: list[Trashed]) -> None:
            box = QMessageBox(self)
            box.setIcon(QMessageBox.Icon.Information)
            box.setWindowTitle("Trashed before")
            if not entries:
                box.setText("clipdesk has moved nothing to the trash.")
            else:
                box.setText(
                    f"clipdesk moved {plural(len(entries), 'photo')} to the system trash; "
                    "restore one from there (your file manager's Trash) to have it back."
                )
                lines = []
                for t in reversed(entries):  # newest first
                    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(t.trashed_at))
                    lines.append(f"{when}  {t.path}\n    → {t.trash_path or 'the system trash'}")
                box.setDetailedText("\n".join(lines))
            self.log_box = box
            box.open()

        self.runner.start(
            lambda _: services.trash_log(),
            name="trash log",
            on_success=shown,
            on_failure=lambda message: self.summary.setText(message),
        )

    def closeEvent(self, event: QCloseEvent) -> None:
        self.cancel()  # the neighbour pass is for this view: stop it with the view
        super().closeEvent(event)

    last_trash: TrashReport | None = None
    log_box: QMessageBox | None = None
    failure_box: QMessageBox | None = None
    _after_trash = ""


def open_duplicates(window: Any) -> DuplicatesDialog:
    """Open (or show again) the main window's duplicates view; after a trash, the
    window's status and grid refresh as after photos were deleted on disk."""
    dialog: DuplicatesDialog | None = getattr(window, "duplicates_dialog", None)
    if dialog is None:  # one per window, kept: its late results always find it
        dialog = DuplicatesDialog(window.services, window.thumbnails, window.runner, window)

        def refreshed(_: object) -> None:
            window.refresh_status()
            current = window.history.current
            if current is not None:
                window.navigate(current, record=False)

        dialog.trashed.connect(refreshed)
        window.duplicates_dialog = dialog
    dialog.show()
    dialog.raise_()
    dialog.activateWindow()
    dialog.setFocus()
    dialog.load()
    return dialog
