"""What the window does with smart albums: their counts in the sidebar (after every
status refresh; the service searches a count again only when the library changed), showing
one in the grid, saving the search shown as one, renaming and deleting."""

from __future__ import annotations

from PySide6.QtWidgets import QInputDialog, QLineEdit

from clipdesk.gui.history import View
from clipdesk.gui.sidebar import SidebarWidget
from clipdesk.gui.window_base import WindowPart
from clipdesk.search.albums import AlbumCount, SavedAlbum
from clipdesk.search.query import QueryError, parse_query


class AlbumActions(WindowPart):
    """The smart-album part of the main window."""

    sidebar: SidebarWidget  # built in MainWindow._build

    def connect_albums(self) -> None:
        """Wire the sidebar's album requests (MainWindow._build, once the sidebar is)."""
        self.sidebar.album_requested.connect(self.show_album)
        self.sidebar.rename_album_requested.connect(self.rename_album)
        self.sidebar.delete_album_requested.connect(self.delete_album)
        self.sidebar.save_album_requested.connect(self.save_search_as_album)
        self.status_refreshed.connect(self.refresh_albums)

    def refresh_albums(self) -> None:
        def shown(albums: list[AlbumCount]) -> None:
            self.sidebar.update_albums(albums)

        self.run(lambda _: self.services.albums(), shown, "albums")

    def show_album(self, name: str) -> None:
        self.search_field.clear()
        self.navigate(View("album", name))

    def save_search_as_album(self) -> None:
        """The text search shown, with its filters, cutoff and order, as a smart album."""
        current = self.history.current
        if current is None or current.kind != "text" or not current.text.strip():
            self.show_error("Search for something first, then save the search as an album.")
            return
        try:
            suggested = parse_query(current.text).text_for_display or current.text
        except QueryError:
            suggested = current.text
        name, ok = QInputDialog.getText(
            self,
            "Save search as album",
            f"An album shows the photos that match “{current.text}”, as they come and go.\n"
            "Album name:",
            QLineEdit.EchoMode.Normal,
            suggested,
        )
        if not ok or not name.strip():
            return
        query, cutoff, sort = current.text, current.cutoff, current.sort
        k = None if cutoff else max(1, self.model.rowCount())  # as many as shown

        def saved(album: SavedAlbum) -> None:
            self.refresh_albums()
            self.statusBar().showMessage(f"Saved the album “{album.name}”", 5000)

        self.run(
            lambda _: self.services.save_album(name, query, cutoff=cutoff, sort=sort, k=k),
            saved,
            "save album",
        )

    def rename_album(self, name: str) -> None:
        new, ok = QInputDialog.getText(
            self, "Rename album", "New name:", QLineEdit.EchoMode.Normal, name
        )
        if not ok or not new.strip() or new == name:
            return

        def renamed(album: SavedAlbum) -> None:
            self.refresh_albums()
            current = self.history.current
            if current is not None and current.kind == "album" and current.text == name:
                self.navigate(View("album", album.name), replace_current=True)

        self.run(lambda _: self.services.rename_album(name, new), renamed, "rename album")

    def delete_album(self, name: str) -> None:
        """Delete an album (the sidebar asked the user first)."""

        def deleted(_: object) -> None:
            self.refresh_albums()
            current = self.history.current
            if current is not None and current.kind == "album" and current.text == name:
                self.navigate(View("all"))

        self.run(lambda _: self.services.delete_album(name), deleted, "delete album")
