"""Words for numbers, shared by the CLI and the window: sizes, durations, plurals, and text
made safe to show. Pure functions; a foundation (imports nothing from clipdesk)."""

from __future__ import annotations

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


def duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``1h02m``."""
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


def human_size(size: int) -> str:
    """Bytes as ``KB``, ``MB`` or ``GB`` (powers of 1000)."""
    if size < 1_000_000:
        return f"{size / 1000:.0f} KB"
    if size < 1_000_000_000:
        return f"{size / 1e6:.0f} MB"
    return f"{size / 1e9:.1f} GB"
