"""Progress reports and cancel tokens shared by every long-running service.

Services are generators that yield :class:`Progress` once per batch and check a
:class:`CancelToken` between batches; the CLI draws a bar from them, the GUI moves a
progress widget. Neither the core nor its services print.
"""

from __future__ import annotations

import contextvars
import enum
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Literal, TypeVar

T = TypeVar("T")

# The phases of the long jobs, in the order an index run meets them: "scan" (find the
# folders' photos), "prepare" (measure the encoder backends, once per model and machine),
# "embed" (photos to vectors), "index" (the vector index saved), "export" (the model
# exported to run without torch, once per model); "tag" is a tagging run's one phase;
# "duplicates" the nearest-neighbour pass that finds near-duplicates.
Phase = Literal["scan", "prepare", "embed", "index", "export", "tag", "duplicates"]


class JobWarning(enum.Enum):
    """Something a job met that did not stop it; the message words it the CLI's way, a
    window recognises the kind here and words it its own way."""

    EXPORT_FAILED = "export failed"  # the model was not exported; searches work as before


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

    phase: Phase
    done: int
    total: int
    failed: int = 0
    rate: float = 0.0  # items per second since the phase started
    eta_s: float | None = None
    message: str = ""
    warning: JobWarning | None = None

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

    def report(self, phase: Phase, done: int, failed: int = 0, message: str = "") -> Progress:
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


def run_reporting(
    work: Callable[[Callable[[Progress], None]], T],
    cancel: CancelToken,
    every_s: float = 0.25,
    name: str = "clipdesk-work",
) -> Generator[Progress, None, T]:
    """Run ``work(report)`` on a thread of its own and yield, from the caller's generator,
    what it reports (the latest report at most every ``every_s``); returns its result or
    raises its exception. For a blocking step inside a generator service (measuring the
    encoder backends, an export in a child process): the caller's bar keeps moving.

    ``work`` must check ``cancel``; if the caller stops iterating (a closed generator,
    an exception), ``cancel`` is set and the thread is waited for, so no thread runs on
    past the service (a thread left running native code at exit can crash the process).
    """
    latest: list[Progress] = []
    outcome: list[tuple[T] | BaseException] = []  # (what work returned,) or what it raised
    changed = threading.Event()

    def report(progress: Progress) -> None:
        latest[:] = [progress]
        changed.set()

    def run() -> None:
        try:
            outcome.append((work(report),))
        except BaseException as exc:  # handed to the caller's thread below
            outcome.append(exc)
        changed.set()

    context = contextvars.copy_context()  # what the caller set (e.g. a measurement's watch)
    thread = threading.Thread(target=context.run, args=(run,), name=name)
    thread.start()
    finished = False
    try:
        while True:
            changed.wait(every_s)
            changed.clear()
            done = bool(outcome)  # the thread's last act; joined below
            if latest:
                yield latest.pop()
            if done:
                break
        finished = True
    finally:
        if not finished:
            cancel.cancel()
        thread.join()
    result = outcome[0]
    if isinstance(result, BaseException):
        raise result
    return result[0]
