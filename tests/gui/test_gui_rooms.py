"""The window's parts working together: a model that could not be fetched is said the
window's way from the error's fields, and only the latest of several requests shows."""

from __future__ import annotations

from typing import Any

import pytest
from PySide6.QtWidgets import QMessageBox

from clipdesk.errors import ModelUnavailableError
from clipdesk.gui.history import View
from clipdesk.gui.main_window import MainWindow
from clipdesk.services import Clipdesk


def test_a_failed_download_is_worded_from_the_error_not_its_message(
    qtbot: Any, library: Any, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    warnings: list[str] = []
    monkeypatch.setattr(QMessageBox, "warning", lambda _p, _t, text: warnings.append(text))
    services = Clipdesk(library)

    def download(*_args: object) -> None:
        raise ModelUnavailableError(
            "reworded: nothing here that a text match would find; run `clipdesk models x`",
            reason="no_network",
            summary="could not download vit-b-32: no network",
        )

    monkeypatch.setattr(services.models, "download", download)
    win = MainWindow(services, settings, index_on_start=False)
    qtbot.addWidget(win)
    win.show()
    win.welcome.download_button.click()
    qtbot.waitUntil(lambda: bool(warnings), timeout=30_000)
    assert warnings[0].startswith("Could not download vit-b-32: no network. Check the connection")
    assert "Import weights file" in warnings[0] and "clipdesk models" not in warnings[0]
    win.close()


def test_only_the_latest_request_shows(
    qtbot: Any, services: Clipdesk, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    win = MainWindow(services, settings, index_on_start=False)
    qtbot.addWidget(win)
    with qtbot.waitSignal(win.status_refreshed, timeout=10_000):
        win.show()
    qtbot.waitUntil(lambda: win.runner.active == 0, timeout=20_000)
    shown: list[int] = []
    win.results_shown.connect(shown.append)
    win.navigate(View("text", "a photo of shoes"))  # superseded at once
    win.navigate(View("all"))
    qtbot.waitUntil(lambda: win.runner.active == 0 and bool(shown), timeout=20_000)
    qtbot.wait(200)  # the older request's answer, were it shown, would be here by now
    assert shown == [0]
    assert win.history.current == View("all") and win.header_label.text() != "Searching…"
    win.close()
