"""The window's settings (QSettings): geometry, zoom, the compute device and how much of
the computer indexing may take. Read on the GUI thread only: a job gets the values, never
the settings object (QSettings is not meant to be shared with worker threads)."""

from __future__ import annotations

from PySide6.QtCore import QByteArray
from PySide6.QtGui import QActionGroup
from PySide6.QtWidgets import QMenu

from clipdesk.gui.grid import DEFAULT_ZOOM, MAX_ZOOM, MIN_ZOOM
from clipdesk.gui.window_base import WindowPart
from clipdesk.models.export_files import torch_available
from clipdesk.throttle import Throttle, usable_cores

DEVICE_NAMES = {
    "auto": "Automatic (GPU if present)",
    "cpu": "CPU",
    "cuda": "NVIDIA GPU (CUDA)",
    "mps": "Apple GPU (MPS)",
}
DEVICES = tuple(DEVICE_NAMES)


class WindowSettings(WindowPart):
    """The settings part of the main window: its menu, and the values read from it."""

    def _build_settings_menu(self, settings_menu: QMenu) -> None:
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

    def _restore_settings(self) -> None:
        geometry = self.settings.value("window/geometry")
        if isinstance(geometry, QByteArray) and not geometry.isEmpty():
            self.restoreGeometry(geometry)
        else:
            self.resize(1280, 800)
        splitter = self.settings.value("window/splitter")
        if isinstance(splitter, QByteArray) and not splitter.isEmpty():
            self.splitter.restoreState(splitter)
        relevant = str(self.settings.value("search/relevant_only", "true")).lower() == "true"
        self.search_bar.relevant_box.blockSignals(True)
        self.search_bar.relevant_box.setChecked(relevant)
        self.search_bar.relevant_box.blockSignals(False)
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
        return value if isinstance(value, str) and value in DEVICES else "auto"
