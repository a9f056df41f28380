"""How wide the graph searches: ef chosen from measurements, not one constant.

hnswlib's recall at a given ef depends on the library (its size, how its vectors spread) and
its time on the CPU. A rebuild therefore holds a sample of the photos out of the graph,
searches the graph for each held-out photo's vector at several ef, and records per ef the
recall@10 against the exact top 10 (computed while the rows stream in) and the median
seconds a search took (:class:`EfCurve`, kept in the graph's pointer). A process that
loads the graph times a few searches again (this CPU, now) and scales the recorded times.
:func:`choose_ef` then takes the smallest ef whose recall reaches RECALL_TARGET, or more
where the time budget allows it (a fast CPU spends its slack on recall), never less.

The graph's memory is also offered to the kernel as transparent huge pages
(:func:`advise_huge_pages`): a search touches a few thousand vectors scattered over 2 GB
at 1M photos, and with 4 KiB pages nearly every one is a TLB miss (measured at 100,000
photos on a Zen 3 core: about 15 % of a search's time; bench/README.md).
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

log = logging.getLogger(__name__)

# What the graph must find of the exact top 10 (issue 21: recall@10 >= 0.98 at 1M).
RECALL_TARGET = 0.98
# The median seconds one graph search may take: of the 10 ms a search may take at 1M
# (issue 21, p95, photo rows included), what is left after fetching the photo rows (1-2.5
# ms, bench/README.md) and the p95 / median spread of a shared machine (about 1.3x).
GRAPH_BUDGET_S = 0.005
EF_STEPS = (32, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536)
HELD_OUT = 64  # photos held out of a rebuild to measure recall (at most a tenth of them)
PROBES = 16  # searches a loading process times to rescale the recorded seconds
K = 10


@dataclass
class EfCurve:
    """Recall@10 and median seconds per ef, measured on ``live`` photos; ``probe_ids``
    are photos a loading process may search to time this CPU against the recorded times."""

    efs: list[int]
    recall: list[float]
    seconds: list[float]
    live: int
    probe_ids: list[int] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {
            "efs": self.efs,
            "recall": [round(r, 4) for r in self.recall],
            "seconds": [round(s, 6) for s in self.seconds],
            "live": self.live,
            "probe_ids": self.probe_ids,
        }

    @classmethod
    def from_json(cls, data: object) -> EfCurve | None:
        if not isinstance(data, dict):
            return None
        try:
            curve = cls(
                [int(e) for e in data["efs"]],
                [float(r) for r in data["recall"]],
                [float(s) for s in data["seconds"]],
                int(data["live"]),
                [int(i) for i in data.get("probe_ids", [])],
            )
        except (KeyError, TypeError, ValueError):
            return None
        same = len(curve.efs) == len(curve.recall) == len(curve.seconds) > 0
        return curve if same else None

    def scaled(self, factor: float) -> EfCurve:
        """The same curve on a CPU ``factor`` times as slow."""
        seconds = [s * factor for s in self.seconds]
        return EfCurve(self.efs, self.recall, seconds, self.live, self.probe_ids)


def choose_ef(
    curve: EfCurve, want: int, target: float | None = None, budget: float | None = None
) -> int:
    """The ef for a search of ``want`` results: the smallest measured ef whose recall
    reaches ``target`` (RECALL_TARGET; the best measured where none does), raised to the
    largest ef that still fits ``budget`` seconds (GRAPH_BUDGET_S) where that is more;
    never below ``want``."""
    target = RECALL_TARGET if target is None else target
    budget = GRAPH_BUDGET_S if budget is None else budget
    order = sorted(range(len(curve.efs)), key=lambda i: curve.efs[i])
    efs = [curve.efs[i] for i in order]
    recall = [curve.recall[i] for i in order]
    seconds = [curve.seconds[i] for i in order]
    reaching = [ef for ef, r in zip(efs, recall, strict=True) if r >= target]
    floor = reaching[0] if reaching else efs[int(np.argmax(recall))]
    fitting = [ef for ef, s in zip(efs, seconds, strict=True) if s <= budget]
    chosen = max(floor, fitting[-1]) if fitting else floor
    return max(chosen, want)


class HeldOut:
    """The exact top ``K`` over the rows added to a graph, for held-out query vectors,
    kept up to date chunk by chunk as the rows stream in."""

    def __init__(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        self.ids = np.asarray(ids, dtype=np.int64)
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self._scores = np.full((len(ids), K), -np.inf, np.float32)
        self._labels = np.full((len(ids), K), -1, np.int64)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if not len(ids) or not len(self.ids):
            return
        scores = self.vectors @ np.asarray(vectors, dtype=np.float32).T
        merged = np.concatenate([self._scores, scores], axis=1)
        labels = np.concatenate(
            [self._labels, np.broadcast_to(np.asarray(ids, np.int64), scores.shape)], axis=1
        )
        top = np.argpartition(-merged, K - 1, axis=1)[:, :K]
        self._scores = np.take_along_axis(merged, top, axis=1)
        self._labels = np.take_along_axis(labels, top, axis=1)

    def truth(self) -> list[set[int]]:
        return [{int(x) for x in row if x >= 0} for row in self._labels]


def measure_curve(
    search: Callable[[np.ndarray, int], np.ndarray],
    queries: np.ndarray,
    truth: list[set[int]],
    live: int,
    efs: Iterable[int] = EF_STEPS,
) -> EfCurve:
    """Recall@K and median seconds of ``search(query, ef)`` (the labels found) per ef."""
    kept, recall, seconds = [], [], []
    for ef in efs:
        times, found = [], []
        for query, expected in zip(queries, truth, strict=True):
            started = time.perf_counter()
            labels = search(query, ef)
            times.append(time.perf_counter() - started)
            found.append(len(expected & {int(x) for x in labels[:K]}) / max(len(expected), 1))
        kept.append(int(ef))
        recall.append(float(np.mean(found)))
        seconds.append(float(np.median(times)))
        if recall[-1] >= RECALL_TARGET and seconds[-1] > GRAPH_BUDGET_S:
            break  # no wider ef can be chosen: the target is reached, the budget spent
    return EfCurve(kept, recall, seconds, live)


def probe_factor(
    curve: EfCurve, search: Callable[[np.ndarray, int], np.ndarray], queries: np.ndarray
) -> float:
    """How many times as long as recorded searches take here and now: ``queries`` timed at
    the curve's ef nearest the one it would choose."""
    if not len(queries):
        return 1.0
    ef = choose_ef(curve, K)
    at = min(range(len(curve.efs)), key=lambda i: abs(curve.efs[i] - ef))
    times = []
    for query in queries:
        started = time.perf_counter()
        search(query, curve.efs[at])
        times.append(time.perf_counter() - started)
    recorded = curve.seconds[at]
    return float(np.median(times)) / recorded if recorded > 0 else 1.0


# -- transparent huge pages for the graph's memory (Linux) ---------------------------------

HUGE_PAGES = True  # off: the graph's memory is left as malloc gives it (bench comparisons)
_MADV_HUGEPAGE = 14
_MADV_COLLAPSE = 25  # Linux 6.1+: make the pages huge now, not when khugepaged gets there
_BIG_REGION = 64 * 2**20


def anonymous_regions() -> set[tuple[int, int]]:
    """The process's anonymous memory mappings (start, end), where /proc says so."""
    regions: set[tuple[int, int]] = set()
    if not sys.platform.startswith("linux"):
        return regions
    try:
        with open("/proc/self/maps", encoding="ascii", errors="replace") as fh:
            for line in fh:
                fields = line.split()
                if len(fields) == 5:  # no path: anonymous
                    start, _, end = fields[0].partition("-")
                    regions.add((int(start, 16), int(end, 16)))
    except OSError:
        pass
    return regions


def advise_huge_pages(before: set[tuple[int, int]], collapse: bool) -> int:
    """Offer the large anonymous regions mapped since ``before`` (the graph hnswlib just
    allocated) to the kernel as huge pages; with ``collapse``, also make their filled pages
    huge now, in a background thread (a few seconds of kernel time at 2 GB). Returns the
    bytes advised; 0 where the platform has no such advice."""
    new = [(a, b) for a, b in anonymous_regions() - before if b - a >= _BIG_REGION]
    if not new or not HUGE_PAGES:
        return 0
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        madvise = libc.madvise
    except (OSError, AttributeError):
        return 0
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    madvise.restype = ctypes.c_int
    advised = 0
    for start, end in new:
        if madvise(start, end - start, _MADV_HUGEPAGE) == 0:
            advised += end - start
    if collapse and advised:

        def run() -> None:
            for start, end in new:
                for at in range(start, end, _BIG_REGION):  # chunks: other work goes on
                    if madvise(at, min(_BIG_REGION, end - at), _MADV_COLLAPSE) != 0:
                        err = ctypes.get_errno()
                        log.debug("huge pages not collapsed: %s", os.strerror(err))
                        return

        threading.Thread(target=run, name="clipdesk-huge-pages", daemon=True).start()
    return advised
