"""Thumbnails for the grid: made off the GUI thread, cached on disk by the core's
:class:`~clipdesk.library.thumbnails.ThumbnailCache` and in memory here.

Only what the view paints is requested, and the newest request is served first, so
scrolling fast through 100,000 photos fills the visible cells first.
"""

from __future__ import annotations

from collections import OrderedDict

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal
from PySide6.QtGui import QImage

from clipdesk.imaging import ImageRejected
from clipdesk.library.thumbnails import ThumbnailCache

_MEMORY_BYTES = 192 * 1024 * 1024
_MAX_WAITING = 600  # older requests are for cells long scrolled past


class _JobSignals(QObject):
    done = Signal(str, object, str)  # fingerprint, QImage or None, reason


class _ThumbnailJob(QRunnable):
    def __init__(
        self, cache: ThumbnailCache, fingerprint: str, path: str, signals: _JobSignals
    ) -> None:
        super().__init__()
        self.cache, self.fingerprint, self.path, self.signals = cache, fingerprint, path, signals

    def run(self) -> None:
        try:
            file = self.cache.make(self.path, self.fingerprint)
            image = QImage(str(file))  # QImage (unlike QPixmap) may be made off the GUI thread
            if image.isNull():
                raise ImageRejected("the cached thumbnail cannot be read")
            self.signals.done.emit(self.fingerprint, image, "")
        except ImageRejected as exc:
            self.signals.done.emit(self.fingerprint, None, str(exc))
        except Exception as exc:  # a thumbnail must never take the app down
            self.signals.done.emit(self.fingerprint, None, f"{type(exc).__name__}: {exc}")


class ThumbnailProvider(QObject):
    ready = Signal(str)  # a fingerprint whose thumbnail (or failure) is now known

    def __init__(self, cache: ThumbnailCache, threads: int = 2, parent: QObject | None = None):
        super().__init__(parent)
        self.cache = cache
        self.pool = QThreadPool(self)
        self.pool.setMaxThreadCount(threads)
        self._images: OrderedDict[str, QImage] = OrderedDict()
        self._bytes = 0
        self._waiting: OrderedDict[str, str] = OrderedDict()  # fingerprint -> path
        self._in_flight: set[str] = set()
        self.failures: dict[str, str] = {}
        self._signals = _JobSignals(self)
        self._signals.done.connect(self._on_done)
        self.made = 0  # thumbnails delivered (for tests and benchmarks)

    def image(self, fingerprint: str, path: str) -> QImage | None:
        """The thumbnail if it is in memory; otherwise it is requested (``ready`` follows)."""
        image = self._images.get(fingerprint)
        if image is not None:
            self._images.move_to_end(fingerprint)
            return image
        self.request(fingerprint, path)
        return None

    def request(self, fingerprint: str, path: str) -> None:
        if fingerprint in self.failures or fingerprint in self._in_flight:
            return
        self._waiting[fingerprint] = path
        self._waiting.move_to_end(fingerprint)
        while len(self._waiting) > _MAX_WAITING:
            self._waiting.popitem(last=False)
        self._pump()

    def _pump(self) -> None:
        while self._waiting and len(self._in_flight) < self.pool.maxThreadCount():
            fingerprint, path = self._waiting.popitem(last=True)  # newest first
            self._in_flight.add(fingerprint)
            self.pool.start(_ThumbnailJob(self.cache, fingerprint, path, self._signals))

    def _on_done(self, fingerprint: str, image: QImage | None, reason: str) -> None:
        self._in_flight.discard(fingerprint)
        if image is None:
            self.failures[fingerprint] = reason
        else:
            self._images[fingerprint] = image
            self._bytes += image.sizeInBytes()
            while self._bytes > _MEMORY_BYTES and len(self._images) > 1:
                _, old = self._images.popitem(last=False)
                self._bytes -= old.sizeInBytes()
            self.made += 1
        self.ready.emit(fingerprint)
        self._pump()

    def drop_waiting(self) -> None:
        """Forget requests not yet started (the grid shows something else now)."""
        self._waiting.clear()

    def shutdown(self, timeout_ms: int = 10000) -> bool:
        self._waiting.clear()
        return bool(self.pool.waitForDone(timeout_ms))
