"""Progress reports and cancel tokens shared by every long-running service.

Services are generators that yield :class:`Progress` once per batch and check a
:class:`CancelToken` between batches; the CLI draws a bar from them, the GUI moves a
progress widget. Neither the core nor its services print.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field


class CancelToken:
    """A thread-safe flag that a caller sets to ask a running service to stop."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()


@dataclass(frozen=True)
class Progress:
    """One step of a long job. ``total`` may grow while a scan discovers files."""

    phase: str  # "scan", "embed" or "index"
    done: int
    total: int
    failed: int = 0
    rate: float = 0.0  # items per second since the phase started
    eta_s: float | None = None
    message: str = ""

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 1.0


@dataclass
class RateMeter:
    """Items/s and ETA for a phase, measured from its first item, without the time the
    service spent handed over to its caller (``resumed``): a paused job holds still there,
    and minutes of pause would otherwise count as minutes of work."""

    total: int
    started: float = field(default_factory=time.perf_counter)
    _reported: float | None = None
    base: int = 0  # done before this meter started: counted in ``done``, not in the rate

    def report(self, phase: str, done: int, failed: int = 0, message: str = "") -> Progress:
        now = time.perf_counter()
        self._reported = now
        elapsed = max(now - self.started, 1e-9)
        rate = (done - self.base) / elapsed
        remaining = max(self.total - done, 0)
        eta = remaining / rate if rate > 0 else None
        return Progress(phase, done, self.total, failed, rate, eta, message)

    def resumed(self) -> None:
        """Call right after yielding a report: the time away does not count."""
        if self._reported is not None:
            self.started += time.perf_counter() - self._reported
            self._reported = None
