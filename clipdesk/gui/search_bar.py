"""The bar under the search field: the filters of the query as chips (each removable with
its × or Backspace/Delete), an "Add filter" menu, the sort order and the "Relevant only"
switch, and a line for a query the window cannot read."""

from __future__ import annotations

from datetime import date, timedelta
from functools import partial

from PySide6.QtCore import QDate, Qt, Signal
from PySide6.QtGui import QFocusEvent, QKeyEvent, QMouseEvent
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDateEdit,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QFrame,
    QHBoxLayout,
    QLabel,
    QMenu,
    QSizePolicy,
    QToolButton,
    QWidget,
)

from clipdesk.gui.chips import Chip
from clipdesk.search.ranking import Sort

SORT_NAMES: dict[Sort, str] = {
    "relevance": "Best match first",
    "newest": "Newest first",
    "oldest": "Oldest first",
}
FILE_TYPES = ("jpg", "png", "heic", "webp", "tif", "gif")

_CHIP_STYLE = """
QFrame#chip { border: 1px solid rgba(40, 110, 220, 0.45); border-radius: 11px;
              background: rgba(40, 110, 220, 0.10); }
QFrame#chip[focused="true"] { border: 2px solid palette(highlight); }
QFrame#chip QLabel { background: transparent; }
QFrame#chip QToolButton { border: none; padding: 0px 2px; font-weight: bold;
                          background: transparent; }
QFrame#chip QToolButton:hover { color: palette(highlight); }
QToolButton#add-filter { padding: 2px 8px; }
QToolButton#add-filter::menu-indicator { image: none; width: 0px; }
"""


class FilterChip(QFrame):
    """One filter: its words and a × that removes it (so do Backspace and Delete)."""

    remove_requested = Signal(object)  # the Chip

    def __init__(self, chip: Chip, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.chip = chip
        self.setObjectName("chip")
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setToolTip(f"{chip.key}:{chip.value} — Backspace or Delete removes it")
        row = QHBoxLayout(self)
        row.setContentsMargins(10, 2, 4, 2)
        row.setSpacing(2)
        self.label = QLabel(chip.label)
        self.close_button = QToolButton()
        self.close_button.setText("×")
        self.close_button.setToolTip("Remove this filter")
        self.close_button.setCursor(Qt.CursorShape.PointingHandCursor)
        self.close_button.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.close_button.clicked.connect(lambda: self.remove_requested.emit(self.chip))
        row.addWidget(self.label)
        row.addWidget(self.close_button)
        self.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Fixed)

    def keyPressEvent(self, event: QKeyEvent) -> None:
        if event.key() in (Qt.Key.Key_Backspace, Qt.Key.Key_Delete):
            self.remove_requested.emit(self.chip)
            return
        super().keyPressEvent(event)

    def mousePressEvent(self, event: QMouseEvent) -> None:
        self.setFocus(Qt.FocusReason.MouseFocusReason)
        super().mousePressEvent(event)

    def focusInEvent(self, event: QFocusEvent) -> None:
        self._restyle(True)
        super().focusInEvent(event)

    def focusOutEvent(self, event: QFocusEvent) -> None:
        self._restyle(False)
        super().focusOutEvent(event)

    def _restyle(self, focused: bool) -> None:
        self.setProperty("focused", "true" if focused else "false")
        self.style().unpolish(self)
        self.style().polish(self)


class DateRangeDialog(QDialog):
    """From one day to another, both included."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Taken between")
        today = QDate.currentDate()
        self.first = QDateEdit(today.addMonths(-1))
        self.last = QDateEdit(today)
        for edit in (self.first, self.last):
            edit.setCalendarPopup(True)
            edit.setDisplayFormat("yyyy-MM-dd")
        form = QFormLayout(self)
        form.addRow("From", self.first)
        form.addRow("To (included)", self.last)
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)

    def range(self) -> tuple[date, date]:
        """``after`` (inclusive) and ``before`` (exclusive), in the query's sense."""
        first, last = sorted(
            date(d.year(), d.month(), d.day()) for d in (self.first.date(), self.last.date())
        )
        return first, last + timedelta(days=1)


class SearchOptionsBar(QWidget):
    """The filter chips and the search's options; the window keeps them in step with the
    text of the search field."""

    chip_removed = Signal(object)  # Chip
    filters_added = Signal(object)  # dict: query key -> value as typed ("type": "png")
    sort_changed = Signal(str)
    relevant_toggled = Signal(bool)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setStyleSheet(_CHIP_STYLE)
        self._folder: str | None = None
        self.chips: list[FilterChip] = []
        row = QHBoxLayout(self)
        row.setContentsMargins(8, 4, 8, 2)
        row.setSpacing(6)
        self.add_button = QToolButton()
        self.add_button.setObjectName("add-filter")
        self.add_button.setText("+ Add filter")
        self.add_button.setToolTip(
            "Filters can also be typed: in:Holidays after:2023-07 before:2023-08 tag:family "
            "type:heic orientation:portrait"
        )
        self.add_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        self.add_menu = QMenu(self)
        self.add_menu.aboutToShow.connect(self._fill_menu)
        self.add_button.setMenu(self.add_menu)
        self._chip_row = QHBoxLayout()
        self._chip_row.setSpacing(4)
        self.message_label = QLabel()
        self.message_label.setObjectName("query-message")
        self.message_label.setStyleSheet("color: #b3261e;")
        self.message_label.setWordWrap(False)
        self.message_label.hide()
        self.sort_combo = QComboBox()
        for sort, name in SORT_NAMES.items():
            self.sort_combo.addItem(name, sort)
        self.sort_combo.setToolTip("Newest and oldest first sort the relevant photos by date")
        self.sort_combo.currentIndexChanged.connect(
            lambda _: self.sort_changed.emit(self.sort_combo.currentData())
        )
        self.relevant_box = QCheckBox("Relevant only")
        self.relevant_box.setChecked(True)
        self.relevant_box.setToolTip(
            "Show only the photos this search finds relevant, from its own scores; "
            "off: the closest photos, however far"
        )
        self.relevant_box.toggled.connect(self.relevant_toggled.emit)
        row.addWidget(self.add_button)
        row.addLayout(self._chip_row)
        row.addWidget(self.message_label, 1)
        row.addStretch(0)
        row.addWidget(self.sort_combo)
        row.addWidget(self.relevant_box)

    # -- state -------------------------------------------------------------------------

    @property
    def sort(self) -> Sort:
        value = self.sort_combo.currentData()
        return next((sort for sort in SORT_NAMES if sort == value), "relevance")

    def set_sort(self, sort: str) -> None:
        index = self.sort_combo.findData(sort)
        if index >= 0 and index != self.sort_combo.currentIndex():
            self.sort_combo.blockSignals(True)
            self.sort_combo.setCurrentIndex(index)
            self.sort_combo.blockSignals(False)

    def set_current_folder(self, folder: str | None) -> None:
        """The folder the window last showed: "Add filter" offers it."""
        self._folder = folder

    def set_chips(self, chips: list[Chip]) -> None:
        had_focus = next((c.chip for c in self.chips if c.hasFocus()), None)
        if [c.chip for c in self.chips] == chips:
            return
        for widget in self.chips:
            self._chip_row.removeWidget(widget)
            widget.deleteLater()
        self.chips = []
        for chip in chips:
            widget = FilterChip(chip)
            widget.remove_requested.connect(self.chip_removed.emit)
            self._chip_row.addWidget(widget)
            self.chips.append(widget)
        if had_focus is not None and self.chips:
            self.chips[-1].setFocus()  # Backspace again removes the next one

    def show_message(self, message: str) -> None:
        self.message_label.setText(message)
        self.message_label.setToolTip(message)
        self.message_label.setVisible(bool(message))

    # -- adding ------------------------------------------------------------------------

    def _fill_menu(self) -> None:
        menu = self.add_menu
        menu.clear()
        menu.addAction("Taken between…", self._ask_dates)
        this_year = date.today().year
        when = menu.addMenu("Taken in")
        for year in range(this_year, this_year - 4, -1):
            when.addAction(str(year), partial(self._add, after=str(year), before=str(year + 1)))
        kinds = menu.addMenu("File type")
        for kind in FILE_TYPES:
            kinds.addAction(kind.upper(), partial(self._add, type=kind))
        shapes = menu.addMenu("Orientation")
        for shape in ("landscape", "portrait", "square"):
            shapes.addAction(shape.capitalize(), partial(self._add, orientation=shape))
        folder = self._folder
        action = menu.addAction(
            "In the folder shown last" if folder is None else f"In {folder}",
            partial(self._add, **{"in": folder or ""}),
        )
        action.setEnabled(folder is not None)

    def _add(self, **values: str) -> None:
        self.filters_added.emit(values)

    def _ask_dates(self) -> None:
        dialog = DateRangeDialog(self)
        if dialog.exec() == QDialog.DialogCode.Accepted:
            after, before = dialog.range()
            self.filters_added.emit({"after": after.isoformat(), "before": before.isoformat()})
