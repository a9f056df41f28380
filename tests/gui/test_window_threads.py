"""The window reads its settings (QSettings) on the GUI thread only, also for the jobs it
starts: QSettings is not meant to be shared with worker threads."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from clipdesk.gui.main_window import MainWindow
from clipdesk.services import Clipdesk


def test_importing_a_model_reads_the_device_setting_on_the_gui_thread(
    qtbot: Any,
    library: Any,
    settings: Any,
    clothing_export: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from PySide6.QtWidgets import QFileDialog

    monkeypatch.setenv("CLIPDESK_NO_TORCH", "1")
    monkeypatch.setenv("CLIPDESK_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *a, **k: str(clothing_export))
    readers: list[str] = []
    real_device = MainWindow.device

    def device(self: MainWindow) -> str:
        readers.append(threading.current_thread().name)
        return real_device.fget(self)  # type: ignore[attr-defined,no-any-return]

    monkeypatch.setattr(MainWindow, "device", property(device))
    win = MainWindow(Clipdesk(library), settings, index_on_start=False)
    qtbot.addWidget(win)
    win.show()
    qtbot.waitUntil(lambda: win.status is not None, timeout=20_000)
    win.import_exported()
    qtbot.waitUntil(lambda: win.status is not None and win.status.model is not None, timeout=30_000)
    assert readers and set(readers) == {threading.main_thread().name}
    win.close()
