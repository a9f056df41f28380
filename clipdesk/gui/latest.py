"""Latest request wins (as napari's layer slicer): each new request cancels the one before
it, and a result that arrives late is known for stale and dropped. No Qt here: the window
uses it for its searches, browsing and "find similar", and tests drive it without Qt."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from clipdesk.progress import CancelToken


@dataclass(frozen=True)
class Request:
    """One request: its number, and the token a newer request cancels."""

    number: int
    token: CancelToken = field(default_factory=CancelToken, compare=False)


class LatestRequest:
    """Hands out requests; only the latest one counts. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._latest: Request | None = None
        self._count = 0

    def submit(self, token: CancelToken | None = None) -> Request:
        """A new request (with ``token`` as its cancel token, or a new one); the one before
        it is cancelled."""
        with self._lock:
            self._count += 1
            request = Request(self._count, token if token is not None else CancelToken())
            older, self._latest = self._latest, request
        if older is not None:
            older.token.cancel()
        return request

    def is_latest(self, request: Request) -> bool:
        """Whether ``request`` is still the latest: its result is then wanted."""
        with self._lock:
            return self._latest is not None and self._latest.number == request.number

    def cancel(self) -> None:
        """Cancel the latest request too: no result is wanted any more."""
        with self._lock:
            latest, self._latest = self._latest, None
        if latest is not None:
            latest.token.cancel()
