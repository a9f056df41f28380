"""Terminal output shared by the CLI commands: one redrawn status line, a bar, Ctrl+C as a
cancel. The words for sizes and durations live in :mod:`clipdesk.wording`."""

from __future__ import annotations

import contextlib
import signal
import sys
import time
from collections.abc import Iterator
from types import FrameType
from typing import TextIO

from clipdesk.progress import CancelToken
from clipdesk.wording import duration, human_size, plural, printable

__all__ = [
    "StatusLine",
    "bar",
    "cancel_on_interrupt",
    "duration",  # re-exported from clipdesk.wording, for callers that still look here
    "human_size",
    "plural",
    "printable",
]


class StatusLine:
    """One line redrawn in place on a terminal; a plain line every few seconds otherwise
    (logs and pipes), and always the last one."""

    def __init__(self, stream: TextIO, every_s: float = 5.0) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.every_s = every_s
        self._last_line = 0.0
        self._drawn = False

    def show(self, text: str, final: bool = False) -> None:
        if self.tty:
            self.stream.write("\r\x1b[2K" + text)
            self.stream.flush()
            self._drawn = True
        elif final or time.monotonic() - self._last_line > self.every_s:
            self.stream.write(text + "\n")
            self._last_line = time.monotonic()

    def end(self) -> None:
        """Keep the last drawn line and move below it."""
        if self.tty and self._drawn:
            self.stream.write("\n")
            self._drawn = False


def bar(fraction: float, width: int = 28) -> str:
    filled = int(width * min(max(fraction, 0.0), 1.0))
    return "[" + "#" * filled + "-" * (width - filled) + "]"


@contextlib.contextmanager
def cancel_on_interrupt(message: str = "") -> Iterator[CancelToken]:
    """Ctrl+C sets the token (the service stops at its next check); a second Ctrl+C
    aborts at once."""
    cancel = CancelToken()

    def on_sigint(_signum: int, _frame: FrameType | None) -> None:
        if cancel.cancelled:
            raise KeyboardInterrupt
        cancel.cancel()
        if message:
            sys.stderr.write(f"\n{message}\n")

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield cancel
    finally:
        signal.signal(signal.SIGINT, previous)
