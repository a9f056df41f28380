"""Keeping the computer usable while a large folder is indexed: at most N cores, and a
lower scheduling priority for the indexing threads only (the window stays quick)."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass

log = logging.getLogger(__name__)

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


# The cores a throttle allows now, for hnswlib (None: all). Process-wide, as torch's and
# the BLAS thread counts are: an index runs one at a time (the library's writer lock).
_thread_limit: int | None = None


def hnswlib_threads() -> int:
    """``num_threads`` for hnswlib's add_items / knn_query: the throttle's cores, or -1
    (hnswlib's "all cores") when none applies."""
    return _thread_limit if _thread_limit is not None else -1


@contextlib.contextmanager
def limited_threads(cores: int | None) -> Iterator[None]:
    """At most ``cores`` threads (None: no limit) for torch, numpy's BLAS (threadpoolctl)
    and hnswlib for the duration; each is restored after."""
    global _thread_limit
    if cores is None:
        yield
        return
    torch = sys.modules.get("torch")  # an exported model (no torch) limits its own threads
    before = torch.get_num_threads() if torch is not None else 0
    if torch is not None:
        torch.set_num_threads(cores)
    # BLAS only: torch's OpenMP team is set above, in its own way (threadpoolctl's openmp
    # limit would change the team of every OpenMP library loaded, OpenVINO's too).
    try:
        # lazy: optional (a bundle may lack it), and 33 ms of every start-up otherwise
        from threadpoolctl import threadpool_limits

        blas: contextlib.AbstractContextManager[object] = threadpool_limits(
            limits=cores, user_api="blas"
        )
    except ImportError:  # a dependency; a bundle built without it still indexes
        log.warning("threadpoolctl is missing: numpy's BLAS threads are not limited")
        blas = contextlib.nullcontext()
    outer, _thread_limit = _thread_limit, cores
    try:
        with blas:
            yield
    finally:
        _thread_limit = outer
        if torch is not None:
            torch.set_num_threads(before)


@contextlib.contextmanager
def applied(throttle: Throttle | None) -> Iterator[None]:
    """Apply ``throttle`` to the calling thread for the duration: its cores to torch, BLAS
    and hnswlib (restored after, see :func:`limited_threads`), and its priority."""
    if throttle is None or (throttle.max_cores is None and not throttle.low_priority):
        yield
        return
    if throttle.low_priority:
        lower_this_thread()  # a thread cannot raise itself again: jobs get their own threads
    with limited_threads(throttle.cores if throttle.max_cores is not None else None):
        yield
