"""What the window does with photos and with what is typed, pasted or dropped to search:
open, show in folder, copy the path, find similar, quick look, the details panel."""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any

from PySide6.QtCore import QPoint
from PySide6.QtGui import QDragEnterEvent, QDropEvent, QGuiApplication, QImage
from PySide6.QtWidgets import QMenu

from clipdesk.gui import desktop
from clipdesk.gui.dialogs import QuickLookDialog, UnreadableDialog
from clipdesk.gui.grid import SCORE_ROLE
from clipdesk.gui.history import View
from clipdesk.gui.window_base import WindowPart
from clipdesk.imaging import is_image_name, load_rgb
from clipdesk.library.browsing import PhotoDetails, PhotoRef
from clipdesk.progress import CancelToken


class PhotoActions(WindowPart):
    """The photo and search-input part of the main window."""

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
