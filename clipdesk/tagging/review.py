"""The review queue: for one label of a set, the photos it was given or nearly given, in
the order a person checks them (the window's Review tags view; Qt-free).

*Given*: what :meth:`Classifier.multi_label` gives (the best class, and any label above
:func:`multi_label_bar`), and any photo a stored run of the set gave the label (a
single-label run gives a subset of the multi-label rule's labels). *Nearly given*: the
photos above a blind guess, ``1/(L+1)`` over ``L`` labels and the background, that the
rule left out: the lower half, in log-probability, of the span the bar halves. Of those,
the most probable come, up to as many again as were given (at least a strip's worth,
:data:`NEAR_AT_LEAST`), so a label that fits nothing still shows its best candidates.
Photos the user already said something about (confirmed, rejected, added, imported) are
always in the queue, with their mark.

Orders: ``surest`` (probability, highest first) and ``least_sure`` (closest to the bar
in log-probability first, where a word from the user changes the most).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np
from sqlalchemy import select

from clipdesk.errors import ClipdeskError
from clipdesk.library import Library, db
from clipdesk.library import tags as tag_rule
from clipdesk.progress import CancelToken
from clipdesk.tagging.zero_shot import (
    Classifier,
    _indexed_photos,
    _softmax_with_background,
    multi_label_bar,
)

ORDERS = ("surest", "least_sure")
NEAR_AT_LEAST = 12  # nearly-given photos shown at least (a strip's worth), when there are
_CHUNK = 8192


@dataclass(frozen=True)
class ReviewItem:
    """One photo of a label's queue."""

    photo_id: int
    path: str
    fingerprint: str
    probability: float  # the label's softmax probability over the labels and the background
    given: bool  # the model gives it the label (False: nearly)
    mark: str | None  # confirmed, rejected, manual, imported, or None: not said yet

    @property
    def reviewed(self) -> bool:
        return self.mark is not None


@dataclass(frozen=True)
class ReviewQueue:
    label_set: str
    label: str
    order: str
    bar: float  # the multi-label rule's bar for this set
    items: list[ReviewItem]

    @property
    def reviewed(self) -> int:
        return sum(1 for item in self.items if item.reviewed)


def review_order(probabilities: np.ndarray, bar: float, order: str) -> np.ndarray:
    """Indices of ``probabilities`` in review order (ties by position, stable)."""
    p = np.asarray(probabilities, dtype=np.float64)
    if order == "surest":
        return np.argsort(-p, kind="stable")
    if order == "least_sure":
        distance = np.abs(np.log(np.clip(p, 1e-300, None)) - math.log(bar))
        return np.argsort(distance, kind="stable")
    raise ClipdeskError(f"unknown review order {order!r}: use {' or '.join(ORDERS)}")


def select_queue(
    probabilities: np.ndarray, given: np.ndarray, said: np.ndarray, label_count: int
) -> np.ndarray:
    """Which photos go in the queue (booleans): the given, the said, and the nearly
    given (above a blind guess), the most probable of those up to as many again as
    were given (at least :data:`NEAR_AT_LEAST`)."""
    p = np.asarray(probabilities, dtype=np.float64)
    chosen = np.asarray(given, bool) | np.asarray(said, bool)
    near = np.flatnonzero(~chosen & (p >= 1.0 / (label_count + 1)))
    room = max(int(np.count_nonzero(given)), NEAR_AT_LEAST)
    best = near[np.argsort(-p[near], kind="stable")[:room]]
    chosen[best] = True
    return np.asarray(chosen, dtype=bool)


def _stored_given(library: Library, model_id: int, label_set: str, label: str) -> set[int]:
    with library.session() as s:
        rows = s.scalars(
            select(db.PhotoTag.photo_id)
            .join(db.Label, db.Label.id == db.PhotoTag.label_id)
            .join(db.LabelSet, db.LabelSet.id == db.Label.label_set_id)
            .where(
                db.PhotoTag.model_id == model_id,
                db.Label.name == label,
                db.LabelSet.name == label_set,
            )
        )
        return {int(pid) for pid in rows}


def review_queue(
    library: Library,
    classifier: Classifier,
    model_id: int,
    label_set: str,
    label: str,
    order: str = "surest",
    cancel: CancelToken | None = None,
) -> ReviewQueue:
    """The queue of ``label`` (one of ``classifier.labels``) over the indexed photos,
    from their stored vectors (module docstring)."""
    if order not in ORDERS:
        raise ClipdeskError(f"unknown review order {order!r}: use {' or '.join(ORDERS)}")
    column = classifier.labels.index(label)
    count = len(classifier.labels)
    bar = multi_label_bar(count)
    columns = (db.Photo.id, db.Photo.path, db.Photo.fingerprint, db.Embedding.vector)
    rows = _indexed_photos(library, model_id, None, *columns)
    if not rows:
        return ReviewQueue(label_set, label, order, bar, [])
    ids = np.asarray([row[0] for row in rows], dtype=np.int64)
    probs = np.empty(len(rows), dtype=np.float64)
    given = np.zeros(len(rows), dtype=bool)
    for start in range(0, len(rows), _CHUNK):
        if cancel is not None and cancel.cancelled:
            return ReviewQueue(label_set, label, order, bar, [])
        chunk = rows[start : start + _CHUNK]
        blob = b"".join(cast(bytes, row[3]) for row in chunk)
        vectors = np.frombuffer(blob, dtype=np.float32).reshape(len(chunk), -1)
        label_logits, bg_logits = classifier.logits(vectors)
        p = _softmax_with_background(label_logits, bg_logits, 1.0)
        probs[start : start + len(chunk)] = p[:, column]
        # the multi-label rule (tag --multi) on this label: the best class, or above the bar
        given[start : start + len(chunk)] = (p[:, column] >= bar) | (p.argmax(axis=1) == column)
    given |= np.isin(ids, list(_stored_given(library, model_id, label_set, label)))
    marks = tag_rule.marked_photo_ids(library, label)
    said = np.isin(ids, list(marks))
    chosen = np.flatnonzero(select_queue(probs, given, said, count))
    ordered = chosen[review_order(probs[chosen], bar, order)]
    items = [
        ReviewItem(
            int(ids[i]),
            str(rows[i][1]),
            str(rows[i][2]),
            float(probs[i]),
            bool(given[i]),
            marks.get(int(ids[i])),
        )
        for i in ordered
    ]
    return ReviewQueue(label_set, label, order, bar, items)


def labels_in(sets: dict[str, list[str]], label: str) -> Sequence[str]:
    """The label sets that have ``label`` (a tag of the sidebar may be in several, or in
    none when it was only given by hand)."""
    return [name for name, labels in sets.items() if label in labels]
