"""Starting the desktop app: the QApplication, saved settings, the library, the window."""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

from PySide6.QtCore import QObject, QSettings, QTimer
from PySide6.QtGui import QGuiApplication, QIcon
from PySide6.QtWidgets import QApplication, QMessageBox

from clipdesk.errors import ClipdeskError
from clipdesk.gui.main_window import MainWindow
from clipdesk.library import LIBRARY_ENV, Library, default_library_dir
from clipdesk.services import Clipdesk

log = logging.getLogger(__name__)

STARTUP_PROBE_ENV = "CLIPDESK_STARTUP_PROBE"
# The application id: the name of the menu entry (resources/linux/DESKTOP_ID.desktop) and
# of the installed icons. Wayland docks and task bars match a window to its entry and icon
# by this name, so it must be the entry's file name without ".desktop".
DESKTOP_ID = "io.github.clipdesk.Clipdesk"


def resources_dir() -> Path:
    """The icons and desktop files: inside the package in an installed wheel
    (clipdesk/resources), beside it in a source checkout and in the bundle."""
    package = Path(__file__).resolve().parent.parent
    inside = package / "resources"
    return inside if inside.is_dir() else package.parent / "resources"


RESOURCES = resources_dir()


def app_settings() -> QSettings:
    """Window geometry, last library, device and thumbnail size (an INI file in the
    user's config folder)."""
    return QSettings(QSettings.Format.IniFormat, QSettings.Scope.UserScope, "clipdesk", "clipdesk")


def choose_library(explicit: str | None, settings: QSettings) -> Path:
    if explicit:
        return Path(explicit).expanduser()
    if os.environ.get(LIBRARY_ENV):
        return default_library_dir()
    last = settings.value("library")
    return Path(str(last)) if last else default_library_dir()


def application(argv: list[str] | None = None) -> QApplication:
    app = QApplication.instance()
    if isinstance(app, QApplication):
        return app
    app = QApplication(argv or sys.argv[:1])
    app.setApplicationName("clipdesk")
    app.setOrganizationName("clipdesk")
    app.setApplicationDisplayName("clipdesk")
    app.setDesktopFileName(DESKTOP_ID)
    icon = RESOURCES / "icons" / "clipdesk.svg"
    if icon.is_file():
        app.setWindowIcon(QIcon(str(icon)))
    return app


class ScreenshotDirector(QObject):
    """``--screenshot``: wait for indexing, search, let thumbnails arrive, save a picture
    of the window and quit. Used by the Xvfb test and to make the README screenshots."""

    def __init__(self, window: MainWindow, search: str | None, out: Path, timeout_s: float) -> None:
        super().__init__()
        self.window = window
        self.search = search
        self.out = out
        self.deadline = time.monotonic() + timeout_s
        self.searched = search is None
        self.results = -1
        self.quiet_since: float | None = None
        self.exit_code = 1
        window.results_shown.connect(self._results)
        self.timer = QTimer(self)
        self.timer.setInterval(100)
        self.timer.timeout.connect(self._tick)
        self.timer.start()

    def _results(self, count: int) -> None:
        self.results = count

    def _busy(self) -> bool:
        window = self.window
        thumbs = window.thumbnails
        return (
            window.status is None
            or window.job is not None
            or window.runner.active > 0
            or window.job_runner.active > 0
            or bool(thumbs._waiting or thumbs._in_flight)
        )

    def _tick(self) -> None:
        window = self.window
        timed_out = time.monotonic() > self.deadline
        if not timed_out and self._busy():
            self.quiet_since = None
            return
        if not self.searched and not timed_out:
            self.searched = True
            self.results = -1
            window.search_field.setText(self.search or "")
            window._search_typed_text()
            return
        if not timed_out and self.results < 0:
            return
        now = time.monotonic()
        if self.quiet_since is None:
            self.quiet_since = now
        if now - self.quiet_since < 0.5 and not timed_out:
            return  # let the last thumbnails paint
        self.timer.stop()
        self.out.parent.mkdir(parents=True, exist_ok=True)
        picture = window.grab()
        saved = picture.save(str(self.out))
        self.exit_code = 0 if saved and not timed_out else 1
        platform = QGuiApplication.platformName()
        size = f"{picture.width()}x{picture.height()}"
        state = "after the time limit, before the window settled" if timed_out else "settled"
        print(f"screenshot {self.out} ({platform}, {size}, {self.results} results, {state})")
        window.close()


def run_gui(
    library_dir: str | None = None,
    search: str | None = None,
    screenshot: str | None = None,
    timeout_s: float = 180.0,
    image: str | None = None,
) -> int:
    app = application()
    settings = app_settings()
    try:
        library = Library(choose_library(library_dir, settings))
    except ClipdeskError as exc:
        QMessageBox.critical(None, "clipdesk cannot open the library", str(exc))
        return 2
    services = Clipdesk(library)
    window = MainWindow(services, settings)
    director = None
    if screenshot:
        director = ScreenshotDirector(window, search, Path(screenshot), timeout_s)
    elif search:
        window.search_field.setText(search)
        window._search_typed_text()
    if image and not search:
        window.search_image_file(os.path.abspath(image))
    window.show()
    if os.environ.get(STARTUP_PROBE_ENV):
        # bench/bench_startup.py: say when the first frame is on screen, then leave.
        def shown() -> None:
            print("first window shown", flush=True)
            window.close()

        QTimer.singleShot(0, shown)
    code = app.exec()
    library.close()
    return director.exit_code if director is not None else int(code)
