"""Handing a photo to the rest of the desktop: open it, show it in its folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from PySide6.QtCore import QUrl
from PySide6.QtGui import QDesktopServices


def open_file(path: str) -> bool:
    return bool(QDesktopServices.openUrl(QUrl.fromLocalFile(path)))


def show_in_folder(path: str) -> bool:
    """Open the file manager with the photo selected where the platform can; else its
    folder. Returns False when nothing could be started."""
    try:
        if sys.platform == "darwin":
            subprocess.Popen(["open", "-R", path])
            return True
        if sys.platform == "win32":
            subprocess.Popen(["explorer", "/select,", os.path.normpath(path)])
            return True
        dbus = shutil.which("dbus-send")
        if dbus and os.environ.get("DBUS_SESSION_BUS_ADDRESS"):
            uri = QUrl.fromLocalFile(path).toString()
            done = subprocess.run(
                [
                    dbus,
                    "--session",
                    "--print-reply",
                    "--dest=org.freedesktop.FileManager1",
                    "/org/freedesktop/FileManager1",
                    "org.freedesktop.FileManager1.ShowItems",
                    f"array:string:{uri}",
                    "string:",
                ],
                capture_output=True,
                timeout=5,
            )
            if done.returncode == 0:
                return True
    except (OSError, subprocess.SubprocessError):
        pass
    return bool(QDesktopServices.openUrl(QUrl.fromLocalFile(os.path.dirname(path))))
