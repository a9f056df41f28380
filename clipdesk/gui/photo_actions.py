"""What the window does with photos and with what is typed, pasted or dropped to search:
open, show in folder, copy the path, find similar, quick look, the details panel."""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QPoint
from PySide6.QtGui import QDragEnterEvent, QDropEvent, QGuiApplication, QImage, QKeySequence
from PySide6.QtWidgets import QMenu

from clipdesk.gui import desktop
from clipdesk.gui.chips import Chip, filter_chips, text_without_chip
from clipdesk.gui.dialogs import QuickLookDialog, UnreadableDialog
from clipdesk.gui.grid import SCORE_ROLE
from clipdesk.gui.history import View
from clipdesk.gui.window_base import WindowPart
from clipdesk.imaging import is_image_name, load_rgb
from clipdesk.library.browsing import PhotoDetails, PhotoRef
from clipdesk.progress import CancelToken
from clipdesk.search.query import (
    ParsedQuery,
    QueryError,
    filters_from_options,
    format_query,
    parse_query,
)


class PhotoActions(WindowPart):
    """The photo and search-input part of the main window."""

    if TYPE_CHECKING:  # in tag_actions.TagActions, for the photo menu

        def add_tag_to_selected(self) -> None: ...

        def remove_tag_from_selected(self) -> None: ...

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
        try:
            parse_query(text)  # a mistake is said beside the field; the results stay
        except QueryError as exc:
            self.search_bar.show_message(str(exc))
            return
        self.search_bar.show_message("")
        current = self.history.current
        view = self._search_view("text", text=text)
        if current == view:
            return
        # Refining a query replaces it in the history instead of adding every keystroke.
        self.navigate(view, replace_current=current is not None and current.kind == "text")

    def _search_view(self, kind: str, **fields: Any) -> View:
        """A search view with the bar's sort and cutoff; a date order sorts the relevant
        photos, so it always uses the cutoff."""
        sort = self.search_bar.sort
        cutoff = self.search_bar.relevant_box.isChecked() or sort != "relevance"
        return View(kind, tag=self._current_tag(), sort=sort, cutoff=cutoff, **fields)

    def _search_options_changed(self) -> None:
        """The sort or the cutoff changed: the search shown runs again with them."""
        by_date = self.search_bar.sort != "relevance"
        self.search_bar.relevant_box.setEnabled(not by_date)
        current = self.history.current
        if current is None or not current.is_search:
            return
        sort = self.search_bar.sort
        cutoff = self.search_bar.relevant_box.isChecked() or by_date
        if (current.sort, current.cutoff) != (sort, cutoff):
            view = dataclasses.replace(current, sort=sort, cutoff=cutoff)
            self.navigate(view, replace_current=True)

    def _relevant_toggled(self, on: bool) -> None:
        self.settings.setValue("search/relevant_only", "true" if on else "false")
        self._search_options_changed()

    # -- the filter chips ----------------------------------------------------------------

    def _sync_chips(self, text: str) -> None:
        """The chips follow the text; while it cannot be read, they stay as they were."""
        try:
            parsed = parse_query(text)
        except QueryError:
            return
        self.search_bar.set_chips(filter_chips(parsed.filters))
        if self.search_bar.message_label.isVisible():
            self.search_bar.show_message("")

    def _remove_chip(self, chip: Chip) -> None:
        try:
            text = text_without_chip(parse_query(self.search_field.text()), chip)
        except QueryError as exc:
            self.search_bar.show_message(str(exc))
            return
        except ValueError:  # no text says the rest: the text stays as typed
            self.search_bar.show_message("Edit the search text to take this filter out.")
            return
        self._set_query_text(text)

    def _add_filters(self, values: dict[str, str]) -> None:
        """Filters from the "Add filter" menu, written into the text (a date range or an
        orientation replaces the one there)."""
        try:
            parsed = parse_query(self.search_field.text())
            added = filters_from_options(
                folders=[values["in"]] if "in" in values else (),
                after=values.get("after"),
                before=values.get("before"),
                types=[values["type"]] if "type" in values else (),
                orientation=values.get("orientation"),
            )
        except QueryError as exc:
            self.search_bar.show_message(str(exc))
            return
        kept = parsed.filters
        if added.after or added.before:
            kept = dataclasses.replace(kept, after=None, before=None)
        if added.orientation:
            kept = dataclasses.replace(kept, orientation=None)
        try:
            text = format_query(ParsedQuery(parsed.terms, kept.merged(added)))
        except (QueryError, ValueError):
            words = [f"{key}:{value}" for key, value in values.items()]
            text = " ".join([self.search_field.text().strip(), *words]).strip()
        self._set_query_text(text)

    def _set_query_text(self, text: str) -> None:
        """A rewritten query: shown in the field and searched at once."""
        self.search_field.setText(text)  # an empty text goes back to the photos
        if text:
            self._search_typed_text()

    def more_like_selected(self) -> None:
        """Photos like all the selected ones (one selected: Find similar)."""
        refs = self.grid.selected_refs()
        if len(refs) == 1:
            self.find_similar(refs[0])
        elif refs:
            self.search_field.clear()
            self.navigate(self._search_view("like", refs=tuple(refs)))

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
        self.navigate(self._search_view("image", text=path))

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
            self.navigate(self._search_view("similar", ref=ref))

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
        selected = self.grid.selected_refs()
        if len(selected) > 1:
            action = menu.addAction(f"More like these {len(selected)}", self.more_like_selected)
            action.setShortcut(QKeySequence("Ctrl+Shift+F"))
        menu.addAction("Quick look", lambda: self.quick_look(ref))
        menu.addSeparator()
        several = f" to {len(selected)} photos" if len(selected) > 1 else ""
        menu.addAction(f"Add tag{several}…", self.add_tag_to_selected).setShortcut(
            QKeySequence("T")
        )
        menu.addAction("Remove tag…", self.remove_tag_from_selected).setShortcut(
            QKeySequence("Shift+T")
        )
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
