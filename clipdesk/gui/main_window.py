"""The main window: its assembly (widgets, menus), the library's status, navigation and
folders. It calls the same services as the CLI, each off the GUI thread. Its other roles
live beside it, one file each: jobs.py (job status and control), model_actions.py
(download and import), photo_actions.py (photos, typed, pasted and dropped searches),
window_settings.py (QSettings), album_actions.py, tag_actions.py (tags by hand, the
review view), search_bar.py, widgets.py and words.py
(how it says things). A little over 600 lines: the window's assembly and menus, which read
best in one place."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import numpy as np
from PySide6.QtCore import QSettings, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QCloseEvent, QKeyEvent, QKeySequence
from PySide6.QtWidgets import (
    QFileDialog,
    QLabel,
    QMainWindow,
    QMessageBox,
    QProgressBar,
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

from clipdesk import __version__
from clipdesk.gui import desktop
from clipdesk.gui.album_actions import AlbumActions
from clipdesk.gui.details import DetailsPanel
from clipdesk.gui.duplicates_view import DuplicatesDialog, open_duplicates
from clipdesk.gui.grid import MAX_ZOOM, MIN_ZOOM, PhotoDelegate, PhotoGridModel, PhotoGridView
from clipdesk.gui.history import History, View
from clipdesk.gui.jobs import JobControl
from clipdesk.gui.latest import LatestRequest
from clipdesk.gui.model_actions import ModelActions
from clipdesk.gui.photo_actions import PhotoActions
from clipdesk.gui.search_bar import SearchOptionsBar
from clipdesk.gui.sidebar import SidebarWidget
from clipdesk.gui.tag_actions import TagActions
from clipdesk.gui.thumbnails import ThumbnailProvider
from clipdesk.gui.widgets import ElidedLabel, SearchField, WelcomeWidget
from clipdesk.gui.window_settings import WindowSettings
from clipdesk.gui.words import model_wording
from clipdesk.gui.workers import TaskRunner, Worker
from clipdesk.indexing.watching import FolderWatcher
from clipdesk.library.browsing import PhotoRef
from clipdesk.models.export_files import torch_available
from clipdesk.progress import CancelToken
from clipdesk.search.query import Filters
from clipdesk.search.ranking import CUTOFF_K, Ranking
from clipdesk.services import Clipdesk, LibraryStatus

log = logging.getLogger(__name__)

SEARCH_DELAY_MS = 250  # typing pauses shorter than this do not start a search
SEARCH_RESULTS = 300  # without the relevance cutoff (with it: the service's CUTOFF_K)


class MainWindow(
    JobControl, ModelActions, PhotoActions, AlbumActions, TagActions, WindowSettings, QMainWindow
):
    results_shown = Signal(int)  # rows now in the grid
    job_progressed = Signal(object)  # a Progress of the running job
    folders_changed = Signal(object)  # paths the watcher saw change (from its thread)
    job_finished = Signal(str)  # "index" or "tag", after the status is refreshed
    status_refreshed = Signal()
    duplicates_dialog: DuplicatesDialog | None = None  # made on first use, then kept

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
        self.status = None
        self.label_sets = {}
        self.job = None
        self.job_kind = ""
        self._job_phase = None
        self._job_stopped = False
        self._requests = LatestRequest()  # searches, browsing, similar: the latest wins
        self._quick_look = None
        self._preview_wanted = None
        self._reindex_after_job = False
        self._partial_search = False  # the results shown were found while indexing
        self._watched: list[str] = []
        self.search_summary = ""  # what the status bar last said of a search
        self.tag_undo = []  # tag changes by hand, newest last (Edit > Undo tag change)
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
        self.search_field.textChanged.connect(self._sync_chips)
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
        self.sidebar.review_requested.connect(self.review_tags)
        self.connect_albums()

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
        self.search_bar = SearchOptionsBar()
        self.search_bar.chip_removed.connect(self._remove_chip)
        self.search_bar.filters_added.connect(self._add_filters)
        self.search_bar.sort_changed.connect(lambda _: self._search_options_changed())
        self.search_bar.relevant_toggled.connect(self._relevant_toggled)
        grid_layout.addWidget(self.search_bar)
        grid_layout.addWidget(self.header_label)
        grid_layout.addWidget(self.empty_label, 1)
        grid_layout.addWidget(self.grid, 1)
        self.welcome = WelcomeWidget()
        self.welcome.add_button.clicked.connect(self.choose_folder)
        self.welcome.download_button.clicked.connect(lambda: self.download_model())
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
            ("&Download model…", self.choose_model_download),
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
        edit_menu.addSeparator()
        self.more_like_action = edit_menu.addAction(
            "&More like these", QKeySequence("Ctrl+Shift+F"), self.more_like_selected
        )
        self.more_like_action.setToolTip("Photos like all the selected ones")
        edit_menu.addAction("&Save search as album…", self.save_search_as_album)
        edit_menu.addSeparator()
        self.undo_tag_action = edit_menu.addAction(
            "&Undo tag change", QKeySequence.StandardKey.Undo, self.undo_tag_change
        )
        self.undo_tag_action.setEnabled(False)
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
        tags_menu.addAction(
            "&Review tags…", QKeySequence("Ctrl+Shift+R"), lambda: self.review_tags()
        )
        tags_menu.addSeparator()
        tags_menu.addAction("&Add tag to selected…", QKeySequence("T"), self.add_tag_to_selected)
        tags_menu.addAction(
            "Re&move tag from selected…", QKeySequence("Shift+T"), self.remove_tag_from_selected
        )
        tools_menu = bar.addMenu("T&ools")
        tools_menu.addAction(
            "Find &duplicates…", QKeySequence("Ctrl+Shift+D"), lambda: open_duplicates(self)
        )
        self._build_settings_menu(bar.addMenu("&Settings"))
        help_menu = bar.addMenu("&Help")
        help_menu.addAction("&About clipdesk", self._about)

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
        if view.kind == "folder":
            self.search_bar.set_current_folder(view.text)
        if view.is_search:
            self.search_bar.set_sort(view.sort)
        services = self.services

        def query(token: CancelToken) -> tuple[list[PhotoRef] | np.ndarray, Ranking | None]:
            if view.kind == "album":  # its saved search, run again
                ranking = services.album(view.text)
                return [hit.ref for hit in ranking.hits], ranking
            if view.kind in ("all", "folder"):
                folder = view.text if view.kind == "folder" else None
                return services.browse_ids(folder, view.tag), None
            # A photo of the library (dropped, "Open with", Find similar, More like these)
            # is searched by its stored vector, itself left out; any other image by its look.
            like = {
                "image": [view.text],
                "similar": [view.ref.path] if view.ref is not None else [],
                "like": [ref.path for ref in view.refs],
            }.get(view.kind, [])
            ranking = services.search(
                view.text if view.kind == "text" else "",
                k=None if view.cutoff else SEARCH_RESULTS,
                cutoff=view.cutoff,
                sort=view.sort,
                filters=Filters(tags=(view.tag,)) if view.tag else None,
                like=like,
            )
            return [hit.ref for hit in ranking.hits], ranking

        def shown(result: tuple[list[PhotoRef] | np.ndarray, Ranking | None]) -> None:
            if self._requests.is_latest(request):
                refs, ranking = result
                scores = None if ranking is None else [hit.score for hit in ranking.hits]
                self._show_results(view, refs, scores, ranking=ranking)

        def failed(message: str) -> None:
            if self._requests.is_latest(request):
                self._show_results(view, [], None, message)

        self.header_label.setText("Searching…" if view.is_search else "Loading…")
        worker = self.run(query, shown, "search", failed)
        # The latest request wins: the one before is cancelled, and its result, should it
        # still come, is dropped (shown and failed run later, on this thread, when
        # ``request`` is set).
        request = self._requests.submit(worker.token)

    def _show_results(
        self,
        view: View,
        refs: list[PhotoRef] | np.ndarray,
        scores: list[float] | None,
        error: str = "",
        ranking: Ranking | None = None,
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
        elif not len(refs) and ranking is not None and ranking.cutoff is not None:
            self.empty_label.setText(
                f"No photo matches{self._quoted(view)}.\n\nNone of the "
                f"{ranking.searched:,} photos searched stands out from the rest for it. "
                "Turn off “Relevant only” to see the closest ones anyway."
            )
        elif not len(refs):
            self.empty_label.setText(
                "Nothing here yet: add a folder, then wait for indexing to finish."
                if not view.is_search
                else "No photos match. Is the library indexed?"
            )
        self._say_search_summary(view, ranking, error)
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

    @staticmethod
    def _quoted(view: View) -> str:
        return f" “{view.text}”" if view.kind == "text" else " these"

    def _say_search_summary(self, view: View, ranking: Ranking | None, error: str) -> None:
        """How many photos the cutoff kept, in the status bar, for a while."""
        self.search_summary = ""
        if error or ranking is None or ranking.cutoff is None:
            return
        looked = min(ranking.searched, CUTOFF_K)  # the nearest ones the cutoff weighed
        kept = ranking.cutoff.count
        self.search_summary = f"{kept:,} relevant of {looked:,} looked at"
        if ranking.searched > looked:
            self.search_summary += f", the closest of {ranking.searched:,} photos"
        self.statusBar().showMessage(self.search_summary, 10000)

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

    # -- window ----------------------------------------------------------------------------

    def _about(self) -> None:
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
