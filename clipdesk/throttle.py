"""Keeping the computer usable while a large folder is indexed: at most N cores, and a
lower scheduling priority for the indexing threads only (the window stays quick)."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass

_NICER_BY = 10


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class Throttle:
    max_cores: int | None = None  # None: all of them
    low_priority: bool = False

    @property
    def cores(self) -> int:
        total = usable_cores()
        return total if self.max_cores is None else max(1, min(self.max_cores, total))

    def describe(self) -> str:
        parts = [f"{self.cores} of {usable_cores()} cores"]
        if self.low_priority:
            parts.append("low priority")
        return ", ".join(parts)


def lower_this_thread() -> bool:
    """Lower the calling thread's priority (Linux: per thread). Threads it starts later,
    such as torch's worker team, inherit it. False where the platform cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        tid = threading.get_native_id()
        current = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, min(current + _NICER_BY, 19))
        return True
    except OSError:
        return False


@contextlib.contextmanager
def applied(throttle: Throttle | None) -> Iterator[None]:
    """Apply ``throttle`` to the calling thread for the duration (torch threads restored)."""
    if throttle is None or (throttle.max_cores is None and not throttle.low_priority):
        yield
        return
    torch = sys.modules.get("torch")  # an exported model (no torch) limits its own threads
    before = torch.get_num_threads() if torch is not None else 0
    if torch is not None:
        torch.set_num_threads(throttle.cores)
    if throttle.low_priority:
        lower_this_thread()  # a thread cannot raise itself again: jobs get their own threads
    try:
        yield
    finally:
        if torch is not None:
            torch.set_num_threads(before)
