"""Watching the library's folders while the app runs (watchdog: inotify, FSEvents, ...).

Changes arrive in bursts (a camera import writes hundreds of files), so events are only
collected here; ``on_change`` is called once things have been quiet for ``quiet_s``. The
caller then runs an ordinary incremental index, which skips unchanged files, reuses the
vectors of moved or renamed ones (by content fingerprint) and sweeps deleted ones.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

from clipdesk.imaging import is_image_name

log = logging.getLogger(__name__)

DEFAULT_QUIET_S = 2.0


def _relevant(path: str | bytes) -> bool:
    text = os.fsdecode(path)
    name = os.path.basename(text)
    if any(part.startswith(".") for part in text.split(os.sep) if part):
        return False  # hidden folders are not scanned either
    return is_image_name(name) or "." not in name  # an image, or (likely) a folder


class FolderWatcher:
    """Calls ``on_change(paths)`` from its own thread after a quiet spell following changes."""

    def __init__(
        self,
        on_change: Callable[[set[str]], None],
        quiet_s: float = DEFAULT_QUIET_S,
    ) -> None:
        self.on_change = on_change
        self.quiet_s = quiet_s
        self._observer: BaseObserver | None = None
        self._lock = threading.Lock()
        self._changed: set[str] = set()
        self._last_event = 0.0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.folders: list[str] = []
        self.problems: list[tuple[str, str]] = []

    def _record(self, event: FileSystemEvent) -> None:
        paths = [event.src_path, getattr(event, "dest_path", "") or ""]
        relevant = {os.fsdecode(p) for p in paths if p and _relevant(p)}
        if not relevant:
            return
        with self._lock:
            self._changed |= relevant
            self._last_event = time.monotonic()
        self._wake.set()

    def start(self, folders: Iterable[str]) -> None:
        """Watch ``folders`` (recursively); a folder that cannot be watched is noted in
        ``problems`` and skipped, never fatal."""
        self.stop()
        watcher = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                if event.is_directory and event.event_type == "modified":
                    return  # a folder's own timestamp: the entry events say what changed
                if event.event_type in ("created", "modified", "moved", "deleted", "closed"):
                    watcher._record(event)

        observer = Observer()
        self.folders, self.problems = [], []
        for folder in folders:
            if not os.path.isdir(folder):
                self.problems.append((folder, "not found (unplugged or moved?)"))
                continue
            try:
                observer.schedule(Handler(), folder, recursive=True)
                self.folders.append(folder)
            except OSError as exc:  # e.g. the inotify watch limit
                self.problems.append((folder, str(exc)))
        observer.daemon = True
        observer.start()
        self._observer = observer
        self._stop.clear()
        self._thread = threading.Thread(target=self._debounce, name="clipdesk-watch", daemon=True)
        self._thread.start()

    def _debounce(self) -> None:
        while not self._stop.is_set():
            self._wake.wait()
            if self._stop.is_set():
                return
            with self._lock:
                if not self._changed:
                    self._wake.clear()  # _record sets it again after adding a change
                    continue
                quiet_for = time.monotonic() - self._last_event
                ready = quiet_for >= self.quiet_s
                if ready:
                    changed, self._changed = self._changed, set()
                    self._wake.clear()
            if ready:
                try:
                    self.on_change(changed)
                except Exception:  # the watcher keeps running whatever the callback does
                    log.exception("folder change handler failed")
            else:
                self._stop.wait(max(self.quiet_s - quiet_for, 0.05))

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self._wake.clear()
