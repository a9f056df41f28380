"""The window's part of ``clipdesk --self-test`` (see :mod:`clipdesk.cli.selftest`)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QSettings

from clipdesk.gui.app import ScreenshotDirector, application
from clipdesk.gui.main_window import MainWindow
from clipdesk.services import Clipdesk


def window_check(
    services: Clipdesk, work: Path, query: tuple[str, str], say: Callable[[str], None]
) -> list[str]:
    """Open the real window (offscreen), search as a person types, check the grid's first
    photo; returns the failures."""
    errors = _ErrorLog()
    logging.getLogger("clipdesk").addHandler(errors)
    try:
        app = application()
        settings = QSettings(str(work / "settings.ini"), QSettings.Format.IniFormat)
        window = MainWindow(services, settings)
        shot = work / "window.png"
        director = ScreenshotDirector(window, query[0], shot, timeout_s=120)
        window.show()
        app.exec()
    finally:
        logging.getLogger("clipdesk").removeHandler(errors)
    if errors.messages:  # a background job of the window failed (it shows, but goes on)
        return [f"the window reported: {m}" for m in errors.messages]
    first = window.model.ref_at(0)
    rows = window.model.rowCount()
    say(f"window ({app.platformName()}): {rows} results, first {first.path if first else None}")
    if director.exit_code != 0 or not shot.is_file():
        return ["the window did not settle and save its picture"]
    if first is None or Path(first.path).parent.name != query[1]:
        return [f"the window's first result for {query[0]!r} is not in {query[1]}/"]
    return []


class _ErrorLog(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage().splitlines()[0])
