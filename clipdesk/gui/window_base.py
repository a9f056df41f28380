"""What the parts of the main window share: its signals, and the state and widgets that
:class:`~clipdesk.gui.main_window.MainWindow` builds and its parts (job control, model
actions, photo actions, settings) use. Each part is a mixin of :class:`WindowPart`, so
each file holds one role and the window stays one object (tests and tools drive it as one).

To the type checker a part is a QMainWindow; at run time it is a plain class, and only
MainWindow derives from QMainWindow: a Qt class reached through several Python bases
makes shiboken take the wrong C++ pointer for a QPaintDevice call (a crash)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QSettings, QTimer, Signal
from PySide6.QtWidgets import (
    QMainWindow,
    QProgressBar,
    QPushButton,
    QSlider,
    QSplitter,
    QStackedWidget,
)

from clipdesk.gui.details import DetailsPanel
from clipdesk.gui.dialogs import QuickLookDialog
from clipdesk.gui.grid import PhotoDelegate, PhotoGridModel, PhotoGridView
from clipdesk.gui.history import History, View
from clipdesk.gui.latest import LatestRequest
from clipdesk.gui.search_bar import SearchOptionsBar
from clipdesk.gui.thumbnails import ThumbnailProvider
from clipdesk.gui.widgets import ElidedLabel, SearchField, WelcomeWidget
from clipdesk.gui.workers import TaskRunner, Worker
from clipdesk.library.browsing import PhotoRef
from clipdesk.progress import CancelToken, Phase
from clipdesk.services import Clipdesk, LibraryStatus
from clipdesk.throttle import Throttle

if TYPE_CHECKING:
    _QtWindow = QMainWindow
else:
    _QtWindow = object


class WindowPart(_QtWindow):
    """The declarations a part of the main window works with (MainWindow defines them)."""

    if TYPE_CHECKING:  # the signals, defined by MainWindow
        results_shown = Signal(int)
        job_progressed = Signal(object)
        folders_changed = Signal(object)
        job_finished = Signal(str)
        status_refreshed = Signal()

    # Set in MainWindow.__init__.
    services: Clipdesk
    settings: QSettings  # read on the GUI thread only
    runner: TaskRunner
    job_runner: TaskRunner
    thumbnails: ThumbnailProvider
    history: History
    status: LibraryStatus | None
    label_sets: dict[str, list[str]]
    job: Worker | None
    job_kind: str
    _job_phase: Phase | None
    _job_stopped: bool
    _requests: LatestRequest
    _quick_look: QuickLookDialog | None
    _preview_wanted: PhotoRef | None
    _reindex_after_job: bool
    _partial_search: bool
    _model_ready: bool  # as the services said at the last status refresh
    _debounce: QTimer
    search_summary: str  # what the status bar last said of a search's cutoff

    # Built in MainWindow._build.
    search_field: SearchField
    search_bar: SearchOptionsBar
    zoom_slider: QSlider
    model: PhotoGridModel
    delegate: PhotoDelegate
    grid: PhotoGridView
    header_label: ElidedLabel
    welcome: WelcomeWidget
    pages: QStackedWidget
    details: DetailsPanel
    job_label: ElidedLabel
    job_progress: QProgressBar
    pause_button: QPushButton
    cancel_button: QPushButton
    resume_button: QPushButton
    model_label: ElidedLabel
    splitter: QSplitter

    if TYPE_CHECKING:  # defined by MainWindow or another part

        def run(
            self,
            fn: Callable[[CancelToken], Any],
            on_success: Callable[[Any], None] | None = None,
            name: str = "",
            on_failure: Callable[[str], None] | None = None,
        ) -> Worker: ...

        def show_error(self, message: str) -> None: ...

        def refresh_status(self, then_index: bool = False) -> None: ...

        def navigate(
            self, view: View, record: bool = True, replace_current: bool = False
        ) -> None: ...

        def start_indexing(self) -> None: ...

        def _current_tag(self) -> str | None: ...

        def _set_zoom(self, side: int) -> None: ...

        @property
        def device(self) -> str: ...

        @property
        def throttle(self) -> Throttle: ...
