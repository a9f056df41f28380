"""What the grid shows (a view) and the Back/Forward history of views, like a browser."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

from clipdesk.library.browsing import PhotoRef
from clipdesk.search.ranking import Sort


@dataclass(frozen=True)
class View:
    """``kind``: "all", "folder" (``text`` = folder), "text" (``text`` = query), "image"
    (``text`` = an image file), "similar" (``ref``), "like" (``refs``: more like these),
    "album" (``text``: its name). ``tag`` filters any of them; a search keeps its ``sort``
    and relevance ``cutoff``."""

    kind: str = "all"
    text: str = ""
    ref: PhotoRef | None = None
    tag: str | None = None
    refs: tuple[PhotoRef, ...] = ()
    sort: Sort = "relevance"
    cutoff: bool = True

    def with_tag(self, tag: str | None) -> View:
        return replace(self, tag=tag)

    @property
    def is_search(self) -> bool:
        return self.kind in ("text", "image", "similar", "like")

    def describe(self, count: int) -> str:
        photos = f"{count:,} photo" + ("" if count == 1 else "s")
        if self.is_search and self.cutoff:
            photos = f"{count:,} relevant photo" + ("" if count == 1 else "s")
        tagged = f" tagged “{self.tag}”" if self.tag else ""
        order = {"newest": "newest first", "oldest": "oldest first"}.get(
            self.sort, "best match first"
        )
        if self.kind == "text":
            return f"“{self.text}”: {photos}{tagged}, {order}"
        if self.kind == "like":
            return f"{photos}{tagged} like these {len(self.refs)}, {order}"
        if self.kind == "image":
            return f"{photos}{tagged} that look like {os.path.basename(self.text)}"
        if self.kind == "similar" and self.ref is not None:
            return f"{photos}{tagged} similar to {os.path.basename(self.ref.path)}"
        if self.kind == "album":
            return f"Album “{self.text}”: {photos}"
        if self.kind == "folder":
            return f"{photos}{tagged} in {self.text}"
        return f"{photos}{tagged}" if self.tag else f"All {photos}, newest first"


class History:
    def __init__(self) -> None:
        self._views: list[View] = []
        self._at = -1

    @property
    def current(self) -> View | None:
        return self._views[self._at] if self._at >= 0 else None

    def push(self, view: View, replace_current: bool = False) -> None:
        if replace_current and self._at >= 0:
            self._views[self._at] = view
            del self._views[self._at + 1 :]
            return
        if self.current == view:
            return
        del self._views[self._at + 1 :]
        self._views.append(view)
        self._at += 1

    def can_go_back(self) -> bool:
        return self._at > 0

    def can_go_forward(self) -> bool:
        return self._at < len(self._views) - 1

    def back(self) -> View | None:
        if not self.can_go_back():
            return None
        self._at -= 1
        return self.current

    def forward(self) -> View | None:
        if not self.can_go_forward():
            return None
        self._at += 1
        return self.current
