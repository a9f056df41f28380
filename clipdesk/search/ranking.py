"""From a query vector to the list a person sees: the nearest photos among those the
filters allow, cut where the relevant ones end (:mod:`clipdesk.search.cutoff`), in the
order asked for (relevance, newest or oldest first)."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
from sqlalchemy import func, select

from clipdesk.library import Library, db
from clipdesk.library.browsing import list_photo_ids, photo_refs
from clipdesk.search.cutoff import Cutoff, decide
from clipdesk.search.query import Term
from clipdesk.search.results import SearchHit, nearest_photos
from clipdesk.search.vector_index import VectorIndex, load_vectors

Sort = Literal["relevance", "newest", "oldest"]
SORTS: tuple[Sort, ...] = get_args(Sort)
CUTOFF_K = 200  # the most photos a search with the cutoff returns (the CLI's -k default)
PLAIN_K = 20  # without the cutoff: today's fixed top 20
SAMPLE = 512  # photos whose scores stand for the library's bulk (cutoff.decide)


@dataclass(frozen=True)
class Ranking:
    """What a search found: ``hits`` in the order asked for; ``cutoff`` when one was
    applied (``cutoff.count == 0``: no photo matches); ``searched``: photos the filters let
    through (the whole library without filters); ``listed``: a search of filters only, in
    date order, whose hits have no score."""

    hits: list[SearchHit]
    cutoff: Cutoff | None
    searched: int
    listed: bool = False


def sample_ids(
    library: Library, allowed: Collection[int] | None, size: int, rng: np.random.Generator
) -> list[int]:
    """About ``size`` photo ids drawn uniformly from ``allowed`` (or the whole library):
    random ids in the id range, kept where a photo has one (ids are nearly dense), so a
    million-photo library is never listed for it."""
    if allowed is not None:
        pool = np.fromiter(allowed, dtype=np.int64, count=len(allowed))
        take = min(size, len(pool))
        return sorted(rng.choice(pool, take, replace=False).tolist())
    with library.session() as s:
        top = s.scalar(select(func.max(db.Photo.id))) or 0
    if top <= 4 * size:
        return list(range(1, top + 1))
    return sorted(set(rng.integers(1, top + 1, 2 * size).tolist()))


def sample_scores(
    library: Library,
    index: VectorIndex,
    vector: np.ndarray,
    allowed: Collection[int] | None,
    rng: np.random.Generator,
) -> np.ndarray:
    """The query's scores over a uniform sample of the photos it could return."""
    ids = sample_ids(library, allowed, SAMPLE, rng)
    scores = [
        vectors @ vector.astype(np.float32)
        for _, vectors in load_vectors(library, index.model_id, ids)
    ]
    return np.concatenate(scores) if scores else np.zeros(0, dtype=np.float32)


def rank(
    library: Library,
    index: VectorIndex,
    vector: np.ndarray,
    *,
    k: int,
    allowed: set[int] | None = None,
    exclude: Collection[int] = (),
    cutoff: bool = False,
    null_vector: np.ndarray | None = None,
    sort: Sort = "relevance",
    seed: int = 0,
) -> Ranking:
    """The ``k`` nearest photos to ``vector`` among ``allowed`` (None: all) but
    ``exclude``; with ``cutoff``, only those the query's own score distribution says are
    relevant (``null_vector``: the model's generic-prompt vector, see cutoff.py); then
    sorted as asked. A date order sorts the relevant set, so it is meant with the cutoff."""
    searched = len(index) if allowed is None else len(allowed)
    hits = nearest_photos(library, index, vector, k, exclude, allowed)
    decided = None
    if cutoff and hits:
        rng = np.random.default_rng(seed)
        # The bulk is the whole library's, not the filtered photos': inside a filter that
        # keeps only matches ("beach in:Beaches") the bulk would be all matches, and
        # nothing would stand out from it.
        bulk = sample_scores(library, index, vector, None, rng)
        null = None
        if null_vector is not None:
            best = index.search(null_vector, 1, None, allowed)
            null = np.array([best[0][1]]) if best else None
        top = np.array([hit.score for hit in hits], dtype=np.float64)
        top = np.minimum.accumulate(top)  # exact re-ranking may tie-break a hair out of order
        decided = decide(top, bulk, library_size=max(searched, len(bulk)), null_scores=null)
        hits = hits[: decided.count]
    if sort == "newest":
        hits = sorted(hits, key=lambda hit: -hit.taken_at)
    elif sort == "oldest":
        hits = sorted(hits, key=lambda hit: hit.taken_at)
    return Ranking(hits, decided, searched)


def term_vectors(
    terms: Sequence[Term],
    encode_texts: Callable[[list[str]], np.ndarray],
    vector_of: Callable[[Term], tuple[np.ndarray, int | None]],
) -> tuple[list[np.ndarray], list[float], set[int]]:
    """Each term's vector (the text terms encoded in one batch; images and photos by
    ``vector_of``, which also gives a library photo's id) and weight, and the ids of the
    library photos searched *by* (left out of the results; a subtracted one is not)."""
    texts = [term.value for term in terms if term.kind == "text"]
    encoded = iter(encode_texts(texts) if texts else [])
    vectors: list[np.ndarray] = []
    searched_by: set[int] = set()
    for term in terms:
        if term.kind == "text":
            vectors.append(next(encoded))
            continue
        vector, photo_id = vector_of(term)
        vectors.append(vector)
        if photo_id is not None and term.weight > 0:
            searched_by.add(photo_id)
    return vectors, [term.weight for term in terms], searched_by


def listed(library: Library, allowed: set[int] | None, k: int, newest_first: bool) -> Ranking:
    """A search of filters only: the first ``k`` photos that pass them, by date."""
    ids = list_photo_ids(library, None, allowed, newest_first=newest_first)
    chosen = [int(i) for i in ids[:k]]
    refs = photo_refs(library, chosen)
    hits = [
        SearchHit(i, r.path, 0.0, r.width, r.height, r.taken_at, r.fingerprint)
        for i in chosen
        if (r := refs.get(i)) is not None
    ]
    return Ranking(hits, None, len(allowed) if allowed is not None else len(ids), listed=True)
