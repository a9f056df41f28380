"""Search results: the nearest photos that still exist, as hits to show, and the stored
vector a photo is searched by."""

from __future__ import annotations

import os
import time
from collections.abc import Collection
from dataclasses import dataclass

import numpy as np
from sqlalchemy import select

from clipdesk.library import Library, db
from clipdesk.library.browsing import PhotoRef
from clipdesk.search.vector_index import VectorIndex

MAX_SEARCH_DEPTH = 4096  # neighbours looked at, at most, to find k photos that still exist


@dataclass(frozen=True)
class SearchHit:
    photo_id: int
    path: str
    score: float
    width: int | None
    height: int | None
    taken_at: float
    fingerprint: str = ""

    @property
    def ref(self) -> PhotoRef:
        return PhotoRef(
            self.photo_id, self.path, self.fingerprint, self.width, self.height, self.taken_at
        )

    def as_json(self) -> dict[str, object]:
        return {
            "path": self.path,
            "score": round(self.score, 6),
            "id": self.photo_id,
            "width": self.width,
            "height": self.height,
            "taken_at": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(self.taken_at)),
        }


def photo_rows(library: Library, ids: list[int]) -> dict[int, db.Photo]:
    """The rows of the photos ``ids`` (those that are still in the library)."""
    with library.session() as s:
        return {p.id: p for p in s.scalars(select(db.Photo).where(db.Photo.id.in_(ids)))}


def nearest_photos(
    library: Library,
    index: VectorIndex,
    vector: np.ndarray,
    k: int,
    exclude: int | Collection[int] | None = None,
    allowed: set[int] | None = None,
) -> list[SearchHit]:
    """Nearest photos that still exist, best first (deleted files never show); only
    among ``allowed`` (the filters) where given, never those in ``exclude`` (the photos
    searched by)."""
    if k <= 0:
        return []
    if allowed is not None and not allowed:
        return []
    left_out = {exclude} if isinstance(exclude, int) else set(exclude or ())
    one = next(iter(left_out)) if len(left_out) == 1 else None  # the index leaves it out
    ask = k + (len(left_out) if one is None else 0)
    while True:
        raw = index.search(vector, ask + 8, one, allowed)
        rows = photo_rows(library, [pid for pid, _ in raw])
        hits = []
        for pid, score in raw:
            photo = rows.get(pid)
            if pid in left_out:
                continue
            if photo is None or photo.error is not None or not os.path.exists(photo.path):
                continue
            hits.append(
                SearchHit(
                    pid,
                    photo.path,
                    score,
                    photo.width,
                    photo.height,
                    photo.taken_at,
                    photo.fingerprint,
                )
            )
        if len(hits) >= k or len(raw) < ask + 8 or ask >= len(index):
            return hits[:k]
        if ask >= MAX_SEARCH_DEPTH:
            # Most neighbours are missing (an unplugged drive?): what exists, not a
            # scan of the whole library.
            return hits
        ask *= 4


def stored_vector(library: Library, fingerprint: str, model_id: int) -> np.ndarray | None:
    """The vector stored for a photo content under ``model_id`` (None: not embedded)."""
    with library.session() as s:
        blob = s.scalar(
            select(db.Embedding.vector).where(
                db.Embedding.fingerprint == fingerprint,
                db.Embedding.model_id == model_id,
            )
        )
    return None if blob is None else np.frombuffer(blob, dtype=np.float32)
