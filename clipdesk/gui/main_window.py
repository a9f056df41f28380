"""The main window. It calls the same services as the CLI, each off the GUI thread."""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from PySide6.QtCore import QByteArray, QPoint, QSettings, QSize, Qt, QTimer, Signal
from PySide6.QtGui import (
    QAction,
    QActionGroup,
    QCloseEvent,
    QDragEnterEvent,
    QDropEvent,
    QGuiApplication,
    QImage,
    QKeyEvent,
    QKeySequence,
)
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMainWindow,
    QMenu,
    QMessageBox,
    QProgressBar,
    QProgressDialog,
    QPushButton,
    QScrollArea,
    QSlider,
    QSplitter,
    QStackedWidget,
    QStyle,
    QToolBar,
    QVBoxLayout,
    QWidget,
)

from clipdesk.cli.output import duration, human_size
from clipdesk.gui import desktop
from clipdesk.gui.details import DetailsPanel
from clipdesk.gui.dialogs import (
    ImportWeightsDialog,
    LabelSetDialog,
    QuickLookDialog,
    UnreadableDialog,
)
from clipdesk.gui.grid import (
    DEFAULT_ZOOM,
    MAX_ZOOM,
    MIN_ZOOM,
    SCORE_ROLE,
    PhotoDelegate,
    PhotoGridModel,
    PhotoGridView,
)
from clipdesk.gui.history import History, View
from clipdesk.gui.sidebar import SidebarWidget
from clipdesk.gui.thumbnails import ThumbnailProvider
from clipdesk.gui.workers import TaskRunner, Worker, WorkerToken
from clipdesk.imaging import is_image_name, load_rgb
from clipdesk.indexing.watching import FolderWatcher
from clipdesk.library.browsing import PhotoDetails, PhotoRef
from clipdesk.models.catalog import CATALOG, DEFAULT_NAME
from clipdesk.models.export_files import ExportManifest, install_export, torch_available
from clipdesk.progress import CancelToken, JobWarning, Phase, Progress
from clipdesk.services import Clipdesk, LibraryStatus
from clipdesk.throttle import Throttle, usable_cores

log = logging.getLogger(__name__)

SEARCH_DELAY_MS = 250  # typing pauses shorter than this do not start a search
SEARCH_RESULTS = 300
DEVICE_NAMES = {
    "auto": "Automatic (GPU if present)",
    "cpu": "CPU",
    "cuda": "NVIDIA GPU (CUDA)",
    "mps": "Apple GPU (MPS)",
}
DEVICES = tuple(DEVICE_NAMES)


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


def model_wording(model: str) -> str:
    """A model as the status bar shows it: ``ARCH (TAG)`` or ``ARCH (weights file)`` for a
    spec; a name that already says what it is (``holiday (imported ViT-B-32)``) as it is."""
    arch, colon, weights = model.partition(":")
    if not colon or "(" in weights:
        return model
    return f"{arch} ({os.path.basename(weights) if os.sep in weights else weights})"


def window_wording(message: str) -> str:
    """A service message whose advice names CLI commands, said the window's way."""
    # A catalog model's message says which file to get from where, then the commands.
    reason, cli, _ = message.partition(", then `clipdesk models import")
    if cli:
        reason += ", then use File → Import weights file… (or check the connection and try again)"
    else:
        reason, cli, _ = message.partition("; import a weights file with `clipdesk models import")
        if cli:
            reason += (
                ". Check the connection and try again; or, if you have the model's weights "
                "file, use File → Import weights file…"
            )
    return reason[:1].upper() + reason[1:]


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


class MainWindow(QMainWindow):
    results_shown = Signal(int)  # rows now in the grid
    job_progressed = Signal(object)  # a Progress of the running job
    folders_changed = Signal(object)  # paths the watcher saw change (from its thread)
    job_finished = Signal(str)  # "index" or "tag", after the status is refreshed
    status_refreshed = Signal()

    def __init__(
        self,
        services: Clipdesk,
        settings: QSettings,
        index_on_start: bool = True,
        watch_folders: bool = True,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.services = services
        self.settings = settings
        self.runner = TaskRunner(parent=self)
        # Indexing and tagging run on threads of their own: a lowered priority (which a
        # thread cannot undo) then never slows a search.
        self.job_runner = TaskRunner(max_threads=1, parent=self)
        self.thumbnails = ThumbnailProvider(services.thumbnails, parent=self)
        self.history = History()
        self.status: LibraryStatus | None = None
        self.label_sets: dict[str, list[str]] = {}
        self.job: Worker | None = None
        self.job_kind = ""
        self._job_phase: Phase | None = None
        self._job_stopped = False
        self._query_generation = 0
        self._search_worker: Worker | None = None
        self._quick_look: QuickLookDialog | None = None
        self._preview_wanted: PhotoRef | None = None
        self._reindex_after_job = False
        self._partial_search = False  # the results shown were found while indexing
        self._watched: list[str] = []
        self.watcher = FolderWatcher(self.folders_changed.emit) if watch_folders else None
        self.folders_changed.connect(self._folders_changed)
        self._model_ready = False
        self.setWindowTitle(f"clipdesk — {services.library.directory}")
        self.setAcceptDrops(True)
        self._build()
        self._restore_settings()
        self._debounce = QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(SEARCH_DELAY_MS)
        self._debounce.timeout.connect(self._search_typed_text)
        self.refresh_status(then_index=index_on_start)
        self.navigate(View("all"))

    # -- building ------------------------------------------------------------------------

    def _build(self) -> None:
        style = self.style()
        toolbar = QToolBar("Navigation")
        toolbar.setMovable(False)
        toolbar.setObjectName("navigation")
        self.addToolBar(toolbar)
        self.back_action = QAction(
            style.standardIcon(QStyle.StandardPixmap.SP_ArrowBack), "Back", self
        )
        self.back_action.setShortcut(QKeySequence(Qt.Modifier.ALT | Qt.Key.Key_Left))
        self.back_action.triggered.connect(self.go_back)
        self.forward_action = QAction(
            style.standardIcon(QStyle.StandardPixmap.SP_ArrowForward), "Forward", self
        )
        self.forward_action.setShortcut(QKeySequence(Qt.Modifier.ALT | Qt.Key.Key_Right))
        self.forward_action.triggered.connect(self.go_forward)
        toolbar.addAction(self.back_action)
        toolbar.addAction(self.forward_action)
        self.search_field = SearchField()
        self.search_field.setPlaceholderText(
            "Describe what you are looking for — or drop a photo here to find similar ones"
        )
        self.search_field.setClearButtonEnabled(True)
        self.search_field.setMinimumWidth(200)
        self.search_field.textEdited.connect(self._text_edited)
        self.search_field.returnPressed.connect(self._search_typed_text)
        self.search_field.textChanged.connect(self._text_changed)
        self.search_field.image_pasted.connect(self._image_pasted)
        self.search_field.down_pressed.connect(self._focus_results)
        toolbar.addWidget(self.search_field)
        self.zoom_slider = QSlider(Qt.Orientation.Horizontal)
        self.zoom_slider.setRange(MIN_ZOOM, MAX_ZOOM)
        self.zoom_slider.setSingleStep(16)
        self.zoom_slider.setPageStep(32)
        self.zoom_slider.setFixedWidth(140)
        self.zoom_slider.setToolTip("Thumbnail size (Ctrl+wheel)")
        self.zoom_slider.valueChanged.connect(self._set_zoom)
        toolbar.addSeparator()
        toolbar.addWidget(QLabel(" Size "))
        toolbar.addWidget(self.zoom_slider)

        self.sidebar = SidebarWidget()
        self.sidebar.setMinimumWidth(160)
        self.sidebar.all_requested.connect(lambda: self.navigate(View("all")))
        self.sidebar.folder_requested.connect(lambda p: self.navigate(View("folder", p)))
        self.sidebar.tag_requested.connect(self._show_tag)
        self.sidebar.unreadable_requested.connect(self.show_unreadable)
        self.sidebar.add_folder_requested.connect(self.choose_folder)
        self.sidebar.remove_folder_requested.connect(self.remove_folder)
        self.sidebar.show_folder_requested.connect(desktop.open_file)
        self.sidebar.new_label_set_requested.connect(lambda: self.edit_label_set(""))
        self.sidebar.edit_label_set_requested.connect(self.edit_label_set)
        self.sidebar.run_label_set_requested.connect(lambda n: self.start_tagging(n, None, False))
        self.sidebar.delete_label_set_requested.connect(self.delete_label_set)

        self.model = PhotoGridModel(self)
        self.delegate = PhotoDelegate(self.thumbnails, self)
        self.grid = PhotoGridView()
        self.grid.setModel(self.model)
        self.grid.setItemDelegate(self.delegate)
        self.thumbnails.ready.connect(self.model.thumbnail_ready)
        self.thumbnails.ready.connect(self._thumbnail_ready)
        self.grid.open_requested.connect(self.open_photo)
        self.grid.similar_requested.connect(self.find_similar)
        self.grid.preview_requested.connect(self.quick_look)
        self.grid.copy_requested.connect(self.copy_path)
        self.grid.menu_requested.connect(self._photo_menu)
        self.grid.zoom_requested.connect(
            lambda step: self.zoom_slider.setValue(self.zoom_slider.value() + 24 * step)
        )
        self.grid.selectionModel().currentChanged.connect(self._current_changed)
        self.header_label = ElidedLabel()
        self.header_label.setContentsMargins(8, 4, 8, 4)
        self.empty_label = QLabel()
        self.empty_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty_label.setWordWrap(True)
        self.empty_label.hide()
        grid_page = QWidget()
        grid_layout = QVBoxLayout(grid_page)
        grid_layout.setContentsMargins(0, 0, 0, 0)
        grid_layout.setSpacing(0)
        grid_layout.addWidget(self.header_label)
        grid_layout.addWidget(self.empty_label, 1)
        grid_layout.addWidget(self.grid, 1)
        self.welcome = WelcomeWidget()
        self.welcome.add_button.clicked.connect(self.choose_folder)
        self.welcome.download_button.clicked.connect(self.download_model)
        self.welcome.import_button.clicked.connect(
            self.import_weights if torch_available() else self.import_exported
        )
        self.pages = QStackedWidget()
        self.pages.addWidget(self.welcome)
        self.pages.addWidget(grid_page)

        self.details = DetailsPanel()
        self.details.open_requested.connect(self.open_photo)
        self.details.show_in_folder_requested.connect(self.show_in_folder)
        self.details.copy_requested.connect(self.copy_path)
        self.details.similar_requested.connect(self.find_similar)
        details_scroll = QScrollArea()
        details_scroll.setWidgetResizable(True)
        details_scroll.setWidget(self.details)
        details_scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        details_scroll.setMinimumWidth(220)

        self.splitter = QSplitter()
        self.splitter.setObjectName("main-splitter")
        self.splitter.addWidget(self.sidebar)
        self.splitter.addWidget(self.pages)
        self.splitter.addWidget(details_scroll)
        # a narrower window takes from the details too, not only the grid
        self.splitter.setStretchFactor(1, 3)
        self.splitter.setStretchFactor(2, 1)
        self.splitter.setSizes([240, 760, 320])
        self.setCentralWidget(self.splitter)

        status = self.statusBar()
        self.job_label = ElidedLabel()
        self.job_progress = QProgressBar()
        self.job_progress.setMaximumWidth(220)
        self.job_progress.setTextVisible(False)
        self.pause_button = QPushButton("Pause")
        self.pause_button.clicked.connect(self.toggle_pause)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel_job)
        self.resume_button = QPushButton("Resume indexing")
        self.resume_button.clicked.connect(self.start_indexing)
        self.model_label = ElidedLabel()  # at most 400 px: the messages beside it come first
        status.addWidget(self.job_label, 1)
        status.addWidget(self.job_progress)
        status.addWidget(self.pause_button)
        status.addWidget(self.cancel_button)
        status.addWidget(self.resume_button)
        status.addPermanentWidget(self.model_label)
        self._show_job_controls(False)
        self.resume_button.hide()
        self._build_menus()
        self._update_history_actions()
        QWidget.setTabOrder(self.search_field, self.grid)  # Tab: from the query to its results

    def _build_menus(self) -> None:
        bar = self.menuBar()
        file_menu = bar.addMenu("&File")
        file_menu.addAction("&Add folder…", QKeySequence.StandardKey.Open, self.choose_folder)
        file_menu.addAction("&Index now", QKeySequence("Ctrl+R"), self.start_indexing)
        file_menu.addSeparator()
        full = torch_available()
        needs_full = (
            "Needs the full version of clipdesk (with torch); this one runs exported models"
        )
        for text, slot in (
            ("&Download model…", self.download_model),
            ("I&mport weights file…", self.import_weights),
        ):
            action = file_menu.addAction(text, slot)
            action.setEnabled(full)
            action.setToolTip("" if full else needs_full)
        file_menu.addAction("Import e&xported model…", self.import_exported)
        file_menu.setToolTipsVisible(True)
        file_menu.addSeparator()
        file_menu.addAction("&Quit", QKeySequence.StandardKey.Quit, self.close)
        edit_menu = bar.addMenu("&Edit")
        edit_menu.addAction("&Find", QKeySequence.StandardKey.Find, self.focus_search)
        edit_menu.addAction(
            "&Copy path", lambda: self.copy_path(self.grid.current_ref())
        ).setShortcutContext(Qt.ShortcutContext.WidgetShortcut)
        view_menu = bar.addMenu("&View")
        view_menu.addAction(self.back_action)
        view_menu.addAction(self.forward_action)
        view_menu.addAction("&All photos", lambda: self.navigate(View("all")))
        view_menu.addSeparator()
        view_menu.addAction(
            "Zoom &in",
            QKeySequence.StandardKey.ZoomIn,
            lambda: self.zoom_slider.setValue(self.zoom_slider.value() + 32),
        )
        view_menu.addAction(
            "Zoom &out",
            QKeySequence.StandardKey.ZoomOut,
            lambda: self.zoom_slider.setValue(self.zoom_slider.value() - 32),
        )
        tags_menu = bar.addMenu("&Tags")
        tags_menu.addAction("&New label set…", lambda: self.edit_label_set(""))
        settings_menu = bar.addMenu("&Settings")
        device_menu = settings_menu.addMenu("Compute &device")
        self.device_group = QActionGroup(self)
        current = str(self.settings.value("device", "auto"))
        for device in DEVICES:
            action = device_menu.addAction(
                {
                    "auto": "Automatic (GPU if present)",
                    "cpu": "CPU",
                    "cuda": "NVIDIA GPU (CUDA)",
                }.get(device, "Apple GPU (MPS)")
            )
            action.setCheckable(True)
            action.setChecked(device == current)
            action.setData(device)
            # The CPU version runs exported models on the CPU only.
            action.setEnabled(torch_available() or device in ("auto", "cpu"))
            self.device_group.addAction(action)
        self.device_group.triggered.connect(
            lambda action: self.settings.setValue("device", action.data())
        )
        cores_menu = settings_menu.addMenu("Background &indexing")
        self.cores_group = QActionGroup(self)
        chosen = self.throttle
        for cores in [0, *range(1, usable_cores())]:
            text = (
                "Use all cores" if cores == 0 else f"Use at most {cores} core" + "s" * (cores > 1)
            )
            action = cores_menu.addAction(text)
            action.setCheckable(True)
            action.setChecked((chosen.max_cores or 0) == cores)
            action.setData(cores)
            self.cores_group.addAction(action)
        self.cores_group.triggered.connect(
            lambda action: self.settings.setValue("index/max_cores", action.data())
        )
        cores_menu.addSeparator()
        self.low_priority_action = cores_menu.addAction("Lower priority (keeps the computer quick)")
        self.low_priority_action.setCheckable(True)
        self.low_priority_action.setChecked(chosen.low_priority)
        self.low_priority_action.toggled.connect(
            lambda on: self.settings.setValue("index/low_priority", "true" if on else "false")
        )
        help_menu = bar.addMenu("&Help")
        help_menu.addAction("&About clipdesk", self._about)

    # -- settings ------------------------------------------------------------------------

    def _restore_settings(self) -> None:
        geometry = self.settings.value("window/geometry")
        if isinstance(geometry, QByteArray) and not geometry.isEmpty():
            self.restoreGeometry(geometry)
        else:
            self.resize(1280, 800)
        splitter = self.settings.value("window/splitter")
        if isinstance(splitter, QByteArray) and not splitter.isEmpty():
            self.splitter.restoreState(splitter)
        zoom = int(self.settings.value("thumbnail_size", DEFAULT_ZOOM))  # type: ignore[call-overload]
        self.zoom_slider.setValue(min(max(zoom, MIN_ZOOM), MAX_ZOOM))
        self._set_zoom(self.zoom_slider.value())

    def _save_settings(self) -> None:
        self.settings.setValue("window/geometry", self.saveGeometry())
        self.settings.setValue("window/splitter", self.splitter.saveState())
        self.settings.setValue("thumbnail_size", self.zoom_slider.value())
        self.settings.setValue("library", str(self.services.library.directory))
        self.settings.sync()

    @property
    def throttle(self) -> Throttle:
        cores = int(self.settings.value("index/max_cores", 0))  # type: ignore[call-overload]
        low = str(self.settings.value("index/low_priority", "true")).lower() == "true"
        return Throttle(cores or None, low)

    @property
    def device(self) -> str:
        value = self.settings.value("device", "auto")
        return value if value in DEVICES else "auto"  # type: ignore[return-value]

    # -- running things in the background ------------------------------------------------

    def run(
        self,
        fn: Callable[[CancelToken], Any],
        on_success: Callable[[Any], None] | None = None,
        name: str = "",
        on_failure: Callable[[str], None] | None = None,
    ) -> Worker:
        return self.runner.start(
            fn, name=name, on_success=on_success, on_failure=on_failure or self.show_error
        )

    def show_error(self, message: str) -> None:
        """For 15 s in the status bar (it hides the job line meanwhile), then gone: a
        message that stayed would go on describing something long past."""
        log.warning("%s", message)
        # elided to the room beside the model's name, where Qt would cut it mid-word
        room = self.statusBar().width() - self.model_label.width() - 40
        line = " ".join(message.split())
        shown = self.statusBar().fontMetrics().elidedText(line, Qt.TextElideMode.ElideMiddle, room)
        self.statusBar().showMessage(shown if room > 80 else line, 15000)

    # -- status and sidebar --------------------------------------------------------------

    def refresh_status(self, then_index: bool = False) -> None:
        def load(_: CancelToken) -> tuple[LibraryStatus, dict[str, list[str]], bool]:
            ready = self.services.model_ready()
            return self.services.status(), self.services.label_sets(), ready

        def done(result: tuple[LibraryStatus, dict[str, list[str]], bool]) -> None:
            self.status, self.label_sets, self._model_ready = result
            self.sidebar.update_status(self.status, self.label_sets)
            self._watch([f.path for f in self.status.folders] if self._model_ready else [])
            self._update_model_label()
            empty = not self.status.folders
            self.welcome.set_state(
                len(self.status.folders), not self._model_ready, self.status.photos
            )
            # without a model, the step that is left stays in view (the sidebar lists the
            # photos found)
            if empty or self._model_ready or self.pages.currentWidget() is not self.welcome:
                self.pages.setCurrentIndex(0 if empty else 1)
            if then_index and self.status.folders and self._model_ready:
                self.start_indexing()
            elif then_index and self.status.folders and not self._model_ready:
                self.pages.setCurrentWidget(self.welcome)
                self.start_scanning()  # finding the photos needs no model
            self.status_refreshed.emit()

        self.run(load, done, "status")

    def _update_model_label(self) -> None:
        if self.status is None:
            return
        if self.status.model is None:
            text = "No model yet" if not self._model_ready else "Model: not loaded yet"
        else:
            device = self.status.device.split(",")[0]  # "cpu: bf16 via torch"
            text = f"Model: {model_wording(self.status.model)} · {device}"
        if self.status.switching_to:
            text += f" · switching to {self.status.switching_to.split(':')[0]}"
        self.model_label.setText(text)
        self.model_label.setToolTip(f"{self.status.model}\n{self.status.device}")

    def _watch(self, folders: list[str]) -> None:
        if self.watcher is None or folders == self._watched:
            return
        self._watched = folders
        if folders:
            self.watcher.start(folders)
        else:
            self.watcher.stop()

    def _folders_changed(self, paths: set[str]) -> None:
        """New, changed, moved or deleted photos: an incremental index picks them up."""
        log.info("%d paths changed in the library folders", len(paths))
        if self.job is not None:
            self._reindex_after_job = True
        else:
            self.start_indexing()

    # -- navigation ----------------------------------------------------------------------

    def navigate(self, view: View, record: bool = True, replace_current: bool = False) -> None:
        if record:
            self.history.push(view, replace_current)
        self._update_history_actions()
        if view.kind != "text" and self.search_field.text():
            self.search_field.clear()  # the field shows the text query, and only that
        self._query_generation += 1
        generation = self._query_generation
        if self._search_worker is not None:
            self._search_worker.cancel()  # the latest request wins
        services = self.services

        def query(token: CancelToken) -> tuple[list[PhotoRef] | np.ndarray, list[float] | None]:
            if view.kind in ("all", "folder"):
                folder = view.text if view.kind == "folder" else None
                return services.browse_ids(folder, view.tag), None
            if view.kind == "text":
                hits = services.search_text(view.text, SEARCH_RESULTS, view.tag)
            elif view.kind == "image":
                # A photo of the library (dropped, or "Open with") is shown by its neighbours,
                # itself left out, as with Find similar; any other image by its look.
                hits = services.similar(view.text, SEARCH_RESULTS, view.tag)
            else:
                assert view.ref is not None
                hits = services.similar(view.ref.path, SEARCH_RESULTS, view.tag)
            return [hit.ref for hit in hits], [hit.score for hit in hits]

        def shown(result: tuple[list[PhotoRef] | np.ndarray, list[float] | None]) -> None:
            if generation == self._query_generation:
                self._show_results(view, *result)

        def failed(message: str) -> None:
            if generation == self._query_generation:
                self._show_results(view, [], None, message)

        self.header_label.setText("Searching…" if view.is_search else "Loading…")
        self._search_worker = self.run(query, shown, "search", failed)

    def _show_results(
        self,
        view: View,
        refs: list[PhotoRef] | np.ndarray,
        scores: list[float] | None,
        error: str = "",
    ) -> None:
        self.thumbnails.drop_waiting()
        if isinstance(refs, np.ndarray):
            self.model.set_ids(refs, self.services.photo_refs)
        else:
            self.model.set_photos(refs, scores)
        # found among the photos indexed so far: said, and searched again at the end
        self._partial_search = view.is_search and self.job is not None and self.job_kind == "index"
        header = view.describe(len(refs)) if not error else ""
        if header and self._partial_search:
            header += " · indexing: among the photos indexed so far"
        self.header_label.setText(header)
        if error:
            self.empty_label.setText(error)
        elif not len(refs):
            self.empty_label.setText(
                "Nothing here yet: add a folder, then wait for indexing to finish."
                if not view.is_search
                else "No photos match. Is the library indexed?"
            )
        self.empty_label.setVisible(bool(error) or not len(refs))
        self.grid.setVisible(bool(len(refs)))
        if len(refs):
            self.grid.setCurrentIndex(self.model.index(0))
            self.grid.scrollToTop()
        else:
            self.details.show_nothing()
        if view.kind == "text" and self.search_field.text() != view.text:
            self.search_field.setText(view.text)
        if self.status is not None and self.status.folders:
            self.pages.setCurrentIndex(1)
        self.results_shown.emit(len(refs))

    def _update_history_actions(self) -> None:
        self.back_action.setEnabled(self.history.can_go_back())
        self.forward_action.setEnabled(self.history.can_go_forward())

    def go_back(self) -> None:
        view = self.history.back()
        if view is not None:
            self.navigate(view, record=False)

    def go_forward(self) -> None:
        view = self.history.forward()
        if view is not None:
            self.navigate(view, record=False)

    def _current_tag(self) -> str | None:
        current = self.history.current
        return current.tag if current is not None else None

    def _show_tag(self, tag: str) -> None:
        self.search_field.clear()
        self.navigate(View("all", tag=tag))

    # -- searching -----------------------------------------------------------------------

    def focus_search(self) -> None:
        self.search_field.setFocus()
        self.search_field.selectAll()

    def _text_edited(self, _text: str) -> None:
        self._debounce.start()

    def _text_changed(self, text: str) -> None:
        if not text:  # cleared (Esc or the clear button): back to the photos
            self._debounce.stop()
            current = self.history.current
            if current is not None and current.kind == "text":
                self.navigate(View("all", tag=current.tag))

    def _search_typed_text(self) -> None:
        self._debounce.stop()
        text = self.search_field.text().strip()
        if not text:
            return
        current = self.history.current
        view = View("text", text, tag=self._current_tag())
        if current == view:
            return
        # Refining a query replaces it in the history instead of adding every keystroke.
        self.navigate(view, replace_current=current is not None and current.kind == "text")

    def show_unreadable(self) -> None:
        if self.status is None or not self.status.failed:
            return
        dialog = UnreadableDialog(self.status.failed, desktop.show_in_folder, self)
        dialog.open()

    def _focus_results(self) -> None:
        if not self.grid.isVisible() or not self.model.rowCount():
            return
        self.grid.setFocus()
        if not self.grid.currentIndex().isValid():
            self.grid.setCurrentIndex(self.model.index(0))

    def search_image_file(self, path: str) -> None:
        self.search_field.clear()
        self.navigate(View("image", path, tag=self._current_tag()))

    def _image_pasted(self, image: object) -> None:
        if isinstance(image, str):
            self.search_image_file(image)
            return
        assert isinstance(image, QImage)
        folder = self.services.library.cache_dir / "pasted"
        folder.mkdir(exist_ok=True)
        # the header names it ("… that look like pasted image 14.05.09.png")
        stamp = time.strftime("%H.%M.%S")
        fd, name = tempfile.mkstemp(dir=folder, prefix=f"pasted image {stamp}", suffix=".png")
        os.close(fd)
        name = self._plain_pasted_name(name, stamp)
        if image.isNull() or not image.save(name):  # PNG, from the suffix
            self.show_error("The pasted image could not be read.")
            return
        self.search_image_file(name)

    @staticmethod
    def _plain_pasted_name(name: str, stamp: str) -> str:
        """mkstemp's random tail off the name, where that name is free."""
        plain = os.path.join(os.path.dirname(name), f"pasted image {stamp}.png")
        if os.path.exists(plain):
            return name
        os.replace(name, plain)
        return plain

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if any(u.isLocalFile() and is_image_name(u.toLocalFile()) for u in event.mimeData().urls()):
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:
        for url in event.mimeData().urls():
            if url.isLocalFile() and is_image_name(url.toLocalFile()):
                event.acceptProposedAction()
                self.search_image_file(url.toLocalFile())
                return

    # -- photos ----------------------------------------------------------------------------

    def find_similar(self, ref: PhotoRef | None) -> None:
        if ref is not None:
            self.navigate(View("similar", ref=ref, tag=self._current_tag()))

    def open_photo(self, ref: PhotoRef | None) -> None:
        if ref is not None and not desktop.open_file(ref.path):
            self.show_error(f"No application could open {ref.path}")

    def show_in_folder(self, ref: PhotoRef | None) -> None:
        if ref is not None and not desktop.show_in_folder(ref.path):
            self.show_error(f"Could not open the folder of {ref.path}")

    def copy_path(self, ref: PhotoRef | None) -> None:
        if ref is not None:
            QGuiApplication.clipboard().setText(ref.path)
            self.statusBar().showMessage(f"Copied {ref.path}", 4000)

    def _photo_menu(self, ref: PhotoRef, position: QPoint) -> None:
        menu = QMenu(self)
        menu.addAction("Open", lambda: self.open_photo(ref))
        menu.addAction("Show in folder", lambda: self.show_in_folder(ref))
        menu.addAction("Find similar", lambda: self.find_similar(ref))
        menu.addAction("Quick look", lambda: self.quick_look(ref))
        menu.addSeparator()
        menu.addAction("Copy path", lambda: self.copy_path(ref))
        menu.exec(position)

    def _current_changed(self, current: Any, _previous: Any) -> None:
        ref = self.model.ref_at(current.row())
        if ref is None:
            self.details.show_nothing()
            return
        image = self.thumbnails.image(ref.fingerprint, ref.path)
        self.details.show_ref(ref, current.data(SCORE_ROLE), image)
        if image is None:
            self._await_preview(ref)

        def shown(details: PhotoDetails | None) -> None:
            if details is not None:
                self.details.show_details(details)

        self.run(lambda _: self.services.photo_details(ref.photo_id), shown, "details")

    def _await_preview(self, ref: PhotoRef) -> None:
        self._preview_wanted = ref  # _thumbnail_ready fills the panel when it arrives

    def _thumbnail_ready(self, fingerprint: str) -> None:
        ref = self._preview_wanted
        if ref is not None and ref.fingerprint == fingerprint:
            self._preview_wanted = None
            self.details.set_preview(ref, self.thumbnails.image(ref.fingerprint, ref.path))

    def quick_look(self, ref: PhotoRef | None) -> None:
        if ref is None:
            return
        if self._quick_look is None:
            self._quick_look = QuickLookDialog(self)
            self._quick_look.step_requested.connect(self._quick_look_step)
        dialog = self._quick_look
        screen = self.screen().availableGeometry()
        side = int(max(screen.width(), screen.height()) * self.devicePixelRatioF())

        def load(target: PhotoRef) -> None:
            def decode(_: CancelToken) -> QImage:
                rgb = load_rgb(target.path, min(side, 4096) // 2)
                rgb.thumbnail((side, side))
                data = rgb.tobytes()
                image = QImage(
                    data, rgb.width, rgb.height, 3 * rgb.width, QImage.Format.Format_RGB888
                )
                return image.copy()  # own the pixels before ``data`` goes away

            self.run(
                decode,
                lambda image: dialog.set_image(target, image),
                "preview",
                lambda message: dialog.set_image(target, None, message),
            )

        dialog.show_photo(ref, load)
        dialog.show()
        dialog.raise_()

    def _quick_look_step(self, step: int) -> None:
        row = self.grid.currentIndex().row() + step
        ref = self.model.ref_at(row)
        if ref is not None and self._quick_look is not None:
            self.grid.setCurrentIndex(self.model.index(row))
            self.quick_look(ref)

    def _set_zoom(self, side: int) -> None:
        self.delegate.side = side
        self.grid.setGridSize(self.delegate.cell_size())

    # -- folders ---------------------------------------------------------------------------

    def choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(
            self, "Add a photo folder", os.path.expanduser("~")
        )
        if folder:
            self.add_folders([folder])

    def add_folders(self, folders: list[str]) -> None:
        def added(_: object) -> None:
            self.statusBar().showMessage(f"Added {', '.join(folders)}", 6000)
            self.refresh_status(then_index=True)

        self.run(lambda _: self.services.add_folders(list(folders)), added, "add folders")

    def remove_folder(self, folder: str) -> None:
        if self.job is not None:  # say so before asking, not after
            self.show_error("Wait for the current job to finish (or cancel it) first.")
            return
        answer = QMessageBox.question(
            self,
            "Remove folder",
            f"Remove {folder} from the library?\n\nYour photos stay where they are; only "
            "clipdesk's index of them is forgotten.",
        )
        if answer != QMessageBox.StandardButton.Yes:
            return

        def removed(_: object) -> None:
            self.refresh_status()
            self.navigate(View("all"))

        self.run(lambda _: self.services.remove_folder(folder), removed, "remove folder")

    # -- background jobs: indexing and tagging -----------------------------------------------

    def _show_job_controls(self, visible: bool) -> None:
        for widget in (self.job_progress, self.pause_button, self.cancel_button):
            widget.setVisible(visible)

    def _start_job(self, kind: str, fn: Callable[[CancelToken], Any]) -> bool:
        if self.job is not None:
            self.statusBar().showMessage("Another job is running; it must finish first.", 5000)
            return False
        self.job_kind = kind
        self._job_phase = None
        self._job_stopped = False
        self.resume_button.hide()
        self.pause_button.setText("Pause")
        self._show_job_controls(True)
        self.job_progress.setRange(0, 0)
        self.job_label.setText("Starting…")
        self.job = self.job_runner.start(
            fn,
            name=kind,
            on_yield=self._job_progress,
            on_failure=self._job_failed,
            on_finish=self._job_finished,
        )
        return True

    def start_scanning(self) -> None:
        """Find the folders' photos before there is a model: the sidebar counts them and
        the grid shows them; indexing follows once a model is there."""
        self._start_job("scan", lambda token: self.services.scan(cancel=token))

    def start_indexing(self) -> None:
        if self.status is None:  # not known yet whether there is a model: ask first
            self.refresh_status(then_index=True)
            return
        if self.job is not None and self.job_kind == "scan":  # a model came meanwhile
            self._reindex_after_job = True
            return
        if not self._model_ready:
            self.pages.setCurrentWidget(self.welcome)
            self.show_error("Download or import a model first.")
            return
        device, throttle = self.device, self.throttle
        self._start_job(
            "index",
            lambda token: self.services.index(device=device, cancel=token, throttle=throttle),
        )

    def _job_progress(self, progress: Progress) -> None:
        self.job_progressed.emit(progress)
        if progress.phase != "scan" and self._job_phase == "scan":
            current = self.history.current  # the scan found the photos: show them now
            if current is not None and not current.is_search:
                self.navigate(current, record=False)
        self._job_phase = progress.phase
        if progress.phase == "scan":
            self.job_progress.setRange(0, 0)
            self.job_label.setText(f"Looking for photos… {progress.done:,} files checked")
            return
        if progress.phase == "export":
            self.job_progress.setRange(0, 0 if progress.done == 0 else 1)
            if progress.done == 0:
                self.job_label.setText("Preparing fast searches (once per model)…")
            elif progress.warning is JobWarning.EXPORT_FAILED:
                log.warning("%s", progress.message)  # searches work as before; for the log
            return
        if progress.phase == "prepare":
            self.job_progress.setRange(0, 0)
            self.job_label.setText(
                "Finding the fastest way to run the model on this computer (once)…"
                if progress.done == 0
                else f"Encoder: {progress.message}"
            )
            return
        self.job_progress.setRange(0, max(progress.total, 1))
        self.job_progress.setValue(progress.done)
        if progress.phase == "index":
            self.job_label.setText("Saving the index…")
            return
        verb = "Tagging" if progress.phase == "tag" else "Indexing"
        parts = [f"{verb} {progress.done:,} of {progress.total:,}"]
        if progress.rate > 0:
            parts.append(f"{progress.rate:.1f} photos/s")
        if progress.eta_s is not None and progress.done < progress.total:
            left = progress.eta_s
            parts.append("almost done" if left < 5 else f"about {duration(left)} left")
        if progress.failed:
            parts.append(f"{progress.failed:,} could not be read")
        paused = self.job is not None and self.job.paused
        self.job_label.setText(("Paused · " if paused else "") + " · ".join(parts))
        if progress.phase == "embed" and progress.done and progress.done % 512 < 64:
            self.refresh_status()  # counts in the sidebar, now and then

    def _job_failed(self, message: str) -> None:
        self._job_stopped = True
        self.job_label.setText(message)

    def _job_finished(self) -> None:
        worker, kind = self.job, self.job_kind
        self.job = None
        self._show_job_controls(False)
        cancelled = worker is not None and worker.token.cancelled
        if cancelled and kind == "index" and self._job_phase == "export":
            self.job_label.setText(
                "Library up to date. Preparing fast searches was stopped; it runs again "
                "after the next indexing."
            )
        elif cancelled:
            self.job_label.setText(
                "Indexing stopped. What was done is kept; resume to go on."
                if kind == "index"
                else "Looking for photos stopped."
                if kind == "scan"
                else "Tagging stopped."
            )
            if kind == "index":
                self.resume_button.show()
        elif not self._job_stopped:
            self.job_label.setText(
                {"index": "Library up to date.", "scan": "Photos found."}.get(kind, "Tagging done.")
            )

        def refreshed() -> None:
            self.status_refreshed.disconnect(refreshed)
            current = self.history.current
            searched_early = kind == "index" and self._partial_search
            on_welcome = kind == "scan" and self.pages.currentWidget() is self.welcome
            if (
                current is not None
                and not on_welcome
                and (not current.is_search or kind == "tag" or searched_early)
            ):
                self.navigate(current, record=False)
            if kind == "scan" and self.status and not self._model_ready and not cancelled:
                found = self.status.photos
                self.job_label.setText(
                    f"{found:,} photo{'' if found == 1 else 's'} found · a model is needed "
                    "to search them"
                )
            failed = len(self.status.failed) if self.status else 0
            if kind == "index" and failed and not cancelled and not self._job_stopped:
                self.job_label.setText(
                    f"Library up to date · {failed:,} file{'' if failed == 1 else 's'} could "
                    "not be read (see the sidebar)"
                )
            self.job_finished.emit(kind)

        self.status_refreshed.connect(refreshed)
        self.refresh_status()
        if self._reindex_after_job and not cancelled:
            self._reindex_after_job = False
            QTimer.singleShot(0, self.start_indexing)

    def toggle_pause(self) -> None:
        if self.job is None:
            return
        if self.job.paused:
            self.job.resume()
            self.pause_button.setText("Pause")
            self.job_label.setText("Resuming…")
        else:
            self.job.pause()
            self.pause_button.setText("Resume")
            self.job_label.setText("Paused after the current batch.")

    def cancel_job(self) -> None:
        if self.job is not None:
            self.job.cancel()
            self.job_label.setText("Stopping after the current batch…")

    # -- tagging ---------------------------------------------------------------------------

    def edit_label_set(self, name: str) -> None:
        folders = [f.path for f in self.status.folders] if self.status else []
        dialog = LabelSetDialog(folders, name, self.label_sets.get(name), self)
        if dialog.exec() != LabelSetDialog.DialogCode.Accepted:
            return
        new_name = dialog.name_edit.text().strip()
        labels, folder, multi = dialog.labels, dialog.folder, dialog.multi_check.isChecked()
        self.save_and_tag(new_name, labels, folder, multi)

    def save_and_tag(self, name: str, labels: list[str], folder: str | None, multi: bool) -> None:
        def save(_: CancelToken) -> int:
            return self.services.create_label_set(name, labels)

        self.run(save, lambda _: self.start_tagging(name, folder, multi), "save label set")

    def start_tagging(self, name: str, folder: str | None, multi: bool) -> None:
        self._start_job(
            "tag",
            lambda token: self.services.tag(name, folder, multi=multi, cancel=token),
        )

    def delete_label_set(self, name: str) -> None:
        answer = QMessageBox.question(
            self, "Delete label set", f"Delete the label set “{name}” and the tags it gave?"
        )
        if answer == QMessageBox.StandardButton.Yes:
            self.run(
                lambda _: self.services.delete_label_set(name),
                lambda _: self.refresh_status(),
                "delete label set",
            )

    # -- models ----------------------------------------------------------------------------

    def download_model(self) -> None:
        entry = next(e for e in CATALOG if e.name == DEFAULT_NAME)
        dialog = QProgressDialog(
            f"Downloading {entry.arch} ({human_size(entry.size_bytes)})…", "Cancel", 0, 1000, self
        )
        dialog.setWindowTitle("Download model")
        dialog.setMinimumDuration(0)
        dialog.setAutoClose(False)
        started = time.monotonic()

        def fetch(token: WorkerToken) -> object:
            models = self.services.models
            return models.download(entry.name, lambda *step: token.report(step), token)

        def moved(step: tuple[int, int]) -> None:
            done, total = step
            dialog.setValue(int(1000 * done / total) if total else 0)
            rate = done / max(time.monotonic() - started, 1e-6)
            left = f", about {duration((total - done) / rate)} left" if rate > 0 else ""
            dialog.setLabelText(
                f"Downloading {entry.arch}: {human_size(done)} of {human_size(total)}{left}"
            )

        def done(_: object) -> None:
            dialog.close()
            self.statusBar().showMessage(f"{entry.arch} is ready.", 8000)
            self.refresh_status(then_index=True)

        def failed(message: str) -> None:
            dialog.close()
            QMessageBox.warning(self, "Download failed", window_wording(message))

        worker = self.runner.start(
            fetch, name="download", on_yield=moved, on_success=done, on_failure=failed
        )
        dialog.canceled.connect(worker.cancel)
        dialog.show()

    def import_weights(self) -> None:
        dialog = ImportWeightsDialog(self)
        if dialog.exec() != ImportWeightsDialog.DialogCode.Accepted:
            return
        weights = dialog.file_edit.text().strip()
        arch = dialog.arch_combo.currentText().strip()
        config = dialog.config_edit.text().strip() or None
        name = dialog.name_edit.text().strip() or "imported"
        if not weights:
            return
        device = self.device  # the settings are read here, on the GUI thread

        def register(_: CancelToken) -> str:
            from pathlib import Path

            spec = self.services.models.import_model(
                name, Path(weights), Path(config) if config else None, None if config else arch
            )
            return self.services.use_model(spec, device)

        self._run_import(register, "Importing the weights file…")

    def _run_import(self, job: Callable[[CancelToken], str], message: str) -> None:
        """Run a model import off the GUI thread; then use the model and index with it."""

        def done(outcome: str) -> None:
            self.statusBar().showMessage(outcome, 10000)
            self.refresh_status(then_index=True)

        def failed(reason: str) -> None:
            QMessageBox.warning(self, "Import failed", reason)

        self.statusBar().showMessage(message)
        self.run(job, done, "import", failed)

    def import_exported(self) -> None:
        """Install an exported model folder (``clipdesk models export``) and use it."""
        folder = QFileDialog.getExistingDirectory(self, "Import an exported model")
        if not folder:
            return
        device = self.device  # the settings are read here, on the GUI thread

        def install(_: CancelToken) -> str:
            from pathlib import Path

            installed = install_export(Path(folder))
            spec = ExportManifest.read(installed).spec
            return self.services.use_model(spec, device)

        self._run_import(install, "Checking and copying the exported model…")

    # -- window ----------------------------------------------------------------------------

    def _about(self) -> None:
        from clipdesk import __version__

        QMessageBox.about(
            self,
            "About clipdesk",
            f"clipdesk {__version__}"
            + (" (full version)" if torch_available() else " (CPU version: exported models)")
            + "\n\nExplore your own photos by meaning, on your computer.\n"
            f"Library: {self.services.library.directory}",
        )

    def keyPressEvent(self, event: QKeyEvent) -> None:
        if event.matches(QKeySequence.StandardKey.Paste):
            self.search_field.setFocus()
            self.search_field.keyPressEvent(event)
            return
        super().keyPressEvent(event)

    def shutdown(self) -> None:
        """Stop every background thread (a running index saves what it has), and forget
        the pasted images: only this window's history pointed at them."""
        self._debounce.stop()
        if self.watcher is not None:
            self.watcher.stop()
        self.job_runner.shutdown()
        self.runner.shutdown()
        self.thumbnails.shutdown()
        pasted = self.services.library.cache_dir / "pasted"
        for leftover in pasted.glob("*.png") if pasted.is_dir() else []:
            leftover.unlink(missing_ok=True)  # clipdesk's own copies, never a user's file

    def closeEvent(self, event: QCloseEvent) -> None:
        self._save_settings()
        if self.job is not None:
            self.job_label.setText("Stopping…")
        self.shutdown()
        super().closeEvent(event)
