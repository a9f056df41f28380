"""Render resources/icons/clipdesk.svg to the PNG sizes desktops and installers use."""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication, QImage, QPainter
from PySide6.QtSvg import QSvgRenderer

ICONS = Path(__file__).resolve().parent.parent / "resources" / "icons"
SIZES = (16, 24, 32, 48, 64, 128, 256, 512)


def main() -> int:
    app = QGuiApplication(sys.argv[:1])
    renderer = QSvgRenderer(str(ICONS / "clipdesk.svg"))
    for size in SIZES:
        image = QImage(size, size, QImage.Format.Format_ARGB32)
        image.fill(Qt.GlobalColor.transparent)
        painter = QPainter(image)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        renderer.render(painter)
        painter.end()
        image.save(str(ICONS / f"clipdesk-{size}.png"))
    del app
    # Windows wants one .ico with several sizes (the executable and the installer).
    from PIL import Image

    largest = Image.open(ICONS / "clipdesk-256.png")
    largest.save(
        ICONS / "clipdesk.ico", sizes=[(16, 16), (24, 24), (32, 32), (48, 48), (64, 64), (256, 256)]
    )
    # macOS: one .icns (Pillow writes the sizes an .icns holds from the 512 px picture).
    Image.open(ICONS / "clipdesk-512.png").save(ICONS / "clipdesk.icns")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
