"""Background work for the window: every slow call runs on a thread pool, never on the
GUI thread, and reports back through queued signals.

A :class:`Worker` runs ``fn(cancel_token)``. If that returns a generator (a clipdesk
service), each item it yields arrives as ``yielded`` on the GUI thread; between items
the worker honours pause and cancel, so a paused indexer holds still after its batch.
"""

from __future__ import annotations

import logging
import threading
import traceback
from collections.abc import Callable, Iterator
from typing import Any

from PySide6.QtCore import QCoreApplication, QEvent, QObject, QRunnable, QThreadPool, Signal

from clipdesk.errors import ClipdeskError
from clipdesk.imaging import ImageRejected
from clipdesk.progress import CancelToken

log = logging.getLogger(__name__)


class WorkerSignals(QObject):
    yielded = Signal(object)
    succeeded = Signal(object)  # the function's return value (a generator's: None)
    failed = Signal(str)  # a sentence for the user
    finished = Signal()  # always, last


def user_message(exc: BaseException) -> str:
    """Known problems become their own message; anything else is a bug, said so."""
    if isinstance(exc, ClipdeskError | ImageRejected):
        return str(exc)
    if isinstance(exc, OSError):
        return f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc)
    return f"unexpected error ({type(exc).__name__}: {exc}); details are in the log"


class WorkerToken(CancelToken):
    """The cancel token a worker's function gets; ``report`` sends a progress item to
    the GUI thread from code that reports through a callback instead of yielding."""

    def __init__(self, signals: WorkerSignals) -> None:
        super().__init__()
        self._signals = signals

    def report(self, item: object) -> None:
        self._signals.yielded.emit(item)


class Worker(QRunnable):
    def __init__(self, fn: Callable[[WorkerToken], Any], name: str = "") -> None:
        super().__init__()
        self.setAutoDelete(False)  # the runner drops its reference when it finishes
        self.fn = fn
        self.name = name
        self.signals = WorkerSignals()
        self.token = WorkerToken(self.signals)
        self._running = threading.Event()
        self._running.set()

    # Called from the GUI thread.
    def cancel(self) -> None:
        self.token.cancel()
        self._running.set()  # a paused worker must wake up to stop

    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    # Runs on a pool thread.
    def run(self) -> None:
        try:
            result = self.fn(self.token)
            if isinstance(result, Iterator):
                self._drain(result)
                result = None
            if not self.token.cancelled:
                self.signals.succeeded.emit(result)
        except Exception as exc:
            if not isinstance(exc, ClipdeskError | ImageRejected | OSError):
                log.error("%s failed:\n%s", self.name or "worker", traceback.format_exc())
            self.signals.failed.emit(user_message(exc))
        finally:
            self.signals.finished.emit()

    def _drain(self, steps: Iterator[Any]) -> None:
        # After a cancel the service itself stops at its next check (between batches)
        # and finishes cleanly (the index is saved); its last items are not shown.
        try:
            for item in steps:
                if not self.token.cancelled:
                    self.signals.yielded.emit(item)
                self._running.wait()
        finally:
            close = getattr(steps, "close", None)
            if close is not None:
                close()  # runs the service's cleanup (saves the index) on this thread


class TaskRunner(QObject):
    """Owns the workers of one window: starts them, keeps them alive while they run,
    and on shutdown cancels them and waits, so no thread outlives the window."""

    active_changed = Signal(int)

    def __init__(self, max_threads: int = 4, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.pool = QThreadPool(self)
        self.pool.setMaxThreadCount(max_threads)
        self._active: set[Worker] = set()
        self._closed = False

    def start(
        self,
        fn: Callable[[WorkerToken], Any],
        *,
        name: str = "",
        on_yield: Callable[[Any], None] | None = None,
        on_success: Callable[[Any], None] | None = None,
        on_failure: Callable[[str], None] | None = None,
        on_finish: Callable[[], None] | None = None,
    ) -> Worker:
        worker = Worker(fn, name)
        if on_yield is not None:
            worker.signals.yielded.connect(on_yield)
        if on_success is not None:
            worker.signals.succeeded.connect(on_success)
        if on_failure is not None:
            worker.signals.failed.connect(on_failure)
        if on_finish is not None:
            worker.signals.finished.connect(on_finish)
        if self._closed:
            return worker  # the window is closing: never started, so it reports nothing
        worker.signals.finished.connect(lambda: self._forget(worker))
        self._active.add(worker)
        self.active_changed.emit(len(self._active))
        self.pool.start(worker)
        return worker

    def _forget(self, worker: Worker) -> None:
        self._active.discard(worker)
        self.active_changed.emit(len(self._active))

    @property
    def active(self) -> int:
        return len(self._active)

    def shutdown(self, timeout_ms: int = 30000) -> bool:
        """Cancel everything and wait; True if every thread stopped in time. Nothing
        starts afterwards."""
        self._closed = True
        for worker in list(self._active):
            worker.cancel()
        stopped = bool(self.pool.waitForDone(timeout_ms))
        # Deliver the finished workers' queued signals now, while their receivers exist.
        QCoreApplication.sendPostedEvents(None, QEvent.Type.MetaCall)
        if stopped:
            self._active.clear()
        return stopped
