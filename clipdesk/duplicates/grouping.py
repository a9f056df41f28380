"""Near-duplicate groups from neighbour lists: the threshold, the edges, the components.

Pure numpy, no database: the neighbour lists come from the HNSW graph
(:mod:`clipdesk.duplicates.finding`), or from a benchmark's synthetic vectors. Regrouping at
another threshold reuses the lists: it filters their edges and finds components again,
without a single nearest-neighbour query.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

# Neighbours kept per photo content. A near-duplicate is among a photo's very nearest;
# a burst of more similar frames than this still joins up through the members' own lists.
NEIGHBOURS = 10
# Kept for callers that read it; the fence is now said to be rough from its own standard
# error (fence_is_rough), not from a count of photos.
FEW_PAIRS = 50
# The two-sided 95% normal quantile: the interval the fence's standard error spans.
_Z95 = 1.959964
_FLOOR = 1e-7  # the smallest cosine distance the logarithm below sees (float32 noise)


@dataclass(frozen=True)
class NeighbourLists:
    """Each content's nearest other contents (by row): ``ids`` (n,) the contents' photo
    ids (one photo per content), ``neighbours`` (n, k) their neighbours' photo ids (-1:
    none), ``similarities`` (n, k) the cosines, best first."""

    ids: np.ndarray
    neighbours: np.ndarray
    similarities: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    def pair_similarities(self) -> np.ndarray:
        """Every listed neighbour pair's cosine (each pair as often as it is listed)."""
        return self.similarities[self.neighbours >= 0]


@dataclass(frozen=True)
class Threshold:
    """The cosine above which two photos are near-duplicates, and how it was chosen."""

    value: float
    derived: bool
    how: str


def derived_threshold(lists: NeighbourLists) -> Threshold:
    """The library's own line between its photos that are merely alike and its
    duplicates, from each content's distance to its nearest other content.

    The distances ``1 - cosine`` are put on a log scale, so the rule is the same for a
    model whose cosines crowd near 1 and one whose cosines spread: only ratios of distances
    count. Two published rules, the stricter of the two wins:

    - Tukey's lower fence, Q1 - 1.5 IQR, with the lower quartile mirrored from the upper
      one (Q1 = 2 median - Q3: median - 4 (Q3 - median)): duplicates crowd the low end, and
      up to half of the photos may have one without moving it. Near-duplicates are
      outliers: far closer to their nearest photo than photos usually are.
    - Otsu's split (the two-class split of largest between-class variance, placed in the
      middle of its gap): where the duplicates form a mode of their own, the valley
      between it and the library's usual distances. In a library without duplicates it
      splits the bulk, looser than the fence, and the fence holds.
    """
    sims = np.zeros(0)
    if len(lists) and lists.neighbours.shape[1]:
        sims = lists.similarities[:, 0][lists.neighbours[:, 0] >= 0].astype(np.float64)
    if len(sims) < 4:
        return Threshold(1.0, True, "too few indexed photos to tell duplicates apart")
    logs = np.sort(np.log(np.maximum(1.0 - sims, _FLOOR)))
    median, q3 = np.percentile(logs, [50, 75])
    fence = median - 4.0 * (q3 - median)
    split = otsu_split(logs)
    rule = "Tukey's lower fence"
    if split is not None and split < fence:
        fence, rule = split, "Otsu's split below Tukey's lower fence"
    value = float(min(1.0, max(-1.0, 1.0 - np.exp(fence))))
    rough = ": rough" if fence_is_rough(logs) else ""
    how = (
        f"derived from the library as it is now: {rule} of the log distances from each "
        f"photo to its nearest (from {len(sims):,} photos{rough})"
    )
    return Threshold(round(value, 4), True, how)


def quantile_se(values: np.ndarray, p: float) -> float:
    """The standard error of the ``p`` quantile of sorted ``values``, distribution-free:
    half the span between the order statistics one binomial standard deviation
    (sqrt(n p (1-p)) ranks) either side of rank n p."""
    n = len(values)
    spread = np.sqrt(n * p * (1.0 - p))
    low = int(np.clip(np.floor(n * p - spread), 0, n - 1))
    high = int(np.clip(np.ceil(n * p + spread), 0, n - 1))
    return float(values[high] - values[low]) / 2.0


def fence_is_rough(logs: np.ndarray) -> bool:
    """Whether the fence (5 median - 4 Q3 of the sorted log distances) is too uncertain to
    tell apart from the library's ordinary distances: its 95% interval (from the quantiles'
    standard errors) reaches the lower quartile (mirrored, 2 median - Q3), where a quarter
    of the photos lie. So with few photos the fence is said to be rough, and how few
    follows from how spread the library's distances are."""
    median, q3 = np.percentile(logs, [50, 75])
    fence = median - 4.0 * (q3 - median)
    se = float(np.hypot(5.0 * quantile_se(logs, 0.5), 4.0 * quantile_se(logs, 0.75)))
    return bool(fence + _Z95 * se >= 2.0 * median - q3)


def otsu_split(values: np.ndarray) -> float | None:
    """Otsu's two-class split of sorted ``values``: the middle of the gap at which the
    between-class variance is largest (None: all equal)."""
    n = len(values)
    if n < 2 or values[0] == values[-1]:
        return None
    sums = np.cumsum(values)[:-1]  # the lower class: values[:i], i = 1 .. n-1
    counts = np.arange(1, n, dtype=np.float64)
    low = sums / counts
    high = (sums[-1] + values[-1] - sums) / (n - counts)
    between = counts * (n - counts) * (high - low) ** 2
    between[values[1:] == values[:-1]] = -1.0  # a split between equal values is none
    at = int(np.argmax(between)) + 1
    return float((values[at - 1] + values[at]) / 2)


def components(count: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Connected-component labels of ``count`` nodes joined by edges ``a[i]``-``b[i]``
    (each label is the smallest node of its component): min-label propagation with
    pointer jumping, vectorised."""
    labels = np.arange(count, dtype=np.int64)
    if not len(a):
        return labels
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    while True:
        low = np.minimum(labels[a], labels[b])
        before = labels.copy()
        np.minimum.at(labels, a, low)
        np.minimum.at(labels, b, low)
        while True:  # pointer jumping: every node to its label's label
            jumped = labels[labels]
            if np.array_equal(jumped, labels):
                break
            labels = jumped
        if np.array_equal(before, labels):
            return labels


def near_groups(
    lists: NeighbourLists,
    threshold: float,
    best_of: Callable[[list[int]], int],
    vectors_of: Callable[[list[int]], np.ndarray],
) -> list[list[int]]:
    """Groups of contents (photo ids from ``lists.ids``) that are near-duplicates at
    ``threshold``: the components of the pairs at least that similar, each split until
    every member is that close to the group's best photo (``best_of``: the one to keep),
    so that a chain of small steps (a, like b, like c ... unlike a) does not drift into
    one group. ``vectors_of``: the unit vectors of some contents, for that check.
    Groups of two or more, each sorted by id."""
    if not len(lists):
        return []
    rows, cols = np.nonzero((lists.similarities >= threshold) & (lists.neighbours >= 0))
    order = np.argsort(lists.ids, kind="stable")
    sorted_ids = lists.ids[order]
    targets = lists.neighbours[rows, cols]
    at = np.minimum(np.searchsorted(sorted_ids, targets), len(sorted_ids) - 1)
    known = sorted_ids[at] == targets  # a neighbour outside the lists (filtered) is left out
    a, b = rows[known], order[at[known]]
    labels = components(len(lists), a, b)
    members: dict[int, list[int]] = {}
    for node in np.unique(np.concatenate([a, b])).tolist():
        members.setdefault(int(labels[node]), []).append(node)
    edges = (a, b)
    groups: list[list[int]] = []
    pending = [nodes for nodes in members.values() if len(nodes) > 1]
    while pending:
        nodes = pending.pop()
        ids = [int(lists.ids[n]) for n in nodes]
        if len(nodes) == 2:
            groups.append(sorted(ids))
            continue
        best = best_of(ids)
        vectors = vectors_of(ids)
        close = vectors @ vectors[ids.index(best)] >= threshold
        groups.append(sorted(i for i, near in zip(ids, close, strict=True) if near))
        rest = [n for n, near in zip(nodes, close, strict=True) if not near]
        if len(rest) > 1:
            pending += _split(rest, edges)
    return [g for g in groups if len(g) > 1]


def _split(nodes: Sequence[int], edges: tuple[np.ndarray, np.ndarray]) -> list[list[int]]:
    """The components among ``nodes`` alone (of two or more)."""
    inside = np.asarray(sorted(nodes), dtype=np.int64)
    a, b = edges
    keep = np.isin(a, inside) & np.isin(b, inside)
    local = components(
        len(inside), np.searchsorted(inside, a[keep]), np.searchsorted(inside, b[keep])
    )
    parts: dict[int, list[int]] = {}
    for position, label in enumerate(local.tolist()):
        parts.setdefault(label, []).append(int(inside[position]))
    return [part for part in parts.values() if len(part) > 1]
