"""Terminal output shared by the CLI commands: one redrawn status line, sizes, durations."""

from __future__ import annotations

import contextlib
import signal
import sys
import time
from collections.abc import Iterator
from types import FrameType
from typing import TextIO

from clipdesk.progress import CancelToken


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


_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F)} | {
    c: f"\\u{c:04x}" for c in range(0x80, 0xA0)
}


def printable(text: object) -> str:
    """``text`` safe to show on a terminal: control characters (escape sequences in a file or
    label name could clear the screen or retitle the window) appear as ``\\xNN``."""
    return str(text).translate(_CONTROL)


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    """``1 label``, ``2 labels``."""
    return f"{count:,} {noun if count == 1 else nouns or noun + 's'}"


def bar(fraction: float, width: int = 28) -> str:
    filled = int(width * min(max(fraction, 0.0), 1.0))
    return "[" + "#" * filled + "-" * (width - filled) + "]"


def duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


def human_size(size: int) -> str:
    if size < 1_000_000:
        return f"{size / 1000:.0f} KB"
    if size < 1_000_000_000:
        return f"{size / 1e6:.0f} MB"
    return f"{size / 1e9:.1f} GB"


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
