"""One search with filters, arithmetic, "more like these", the cutoff and date order
(Clipdesk.search), each checked against a brute-force ranking of the stored vectors."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from clipdesk.errors import ClipdeskError
from clipdesk.library import Library
from clipdesk.models.encoder import ClipEncoder
from clipdesk.search.query import Filters, combine, parse_query
from clipdesk.search.vector_index import load_vectors
from clipdesk.services import Clipdesk
from clipdesk.spec import ModelSpec
from tests.helpers import CLOTHING_CONFIG, CLOTHING_SPEC


def _indexed(app: Clipdesk, photos: Path, spec: ModelSpec) -> None:
    app.add_folders([photos])
    list(app.index(spec, "cpu"))


def _stored(app: Clipdesk) -> tuple[np.ndarray, np.ndarray]:
    index = app.vector_index()
    parts = list(load_vectors(app.library, index.model_id))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _paths_by_id(app: Clipdesk) -> dict[int, str]:
    refs = app.photo_refs([int(i) for i in _stored(app)[0]])
    return {i: r.path for i, r in refs.items()}


def _exact(app: Clipdesk, vector: np.ndarray, keep: set[int] | None, k: int) -> list[int]:
    ids, vectors = _stored(app)
    scores = vectors @ vector
    order = [int(ids[i]) for i in np.argsort(-scores, kind="stable")]
    return [i for i in order if keep is None or i in keep][:k]


def _recall(got: list[int], want: list[int]) -> float:
    return len(set(got) & set(want)) / max(1, len(want))


def test_each_filter_keeps_only_its_photos_and_the_best_of_them(
    app: Clipdesk, photos: Path, tiny_spec: ModelSpec
) -> None:
    # dates: the hats were taken in 2021, the rest keep their file dates (now)
    hat_time = time.mktime((2021, 7, 15, 12, 0, 0, 0, 0, -1))
    for hat in (photos / "hat").iterdir():
        os.utime(hat, (hat_time, hat_time))
    _indexed(app, photos, tiny_spec)
    paths = _paths_by_id(app)
    query = "a photo of a shirt"
    vector = app.query_encoder().encode_texts([query])[0]
    cases: dict[str, Callable[[str], bool]] = {
        "in:hat": lambda p: f"{os.sep}hat{os.sep}" in p,
        f"in:{photos / 'shoes'}": lambda p: p.startswith(str(photos / "shoes") + os.sep),
        "in:hat in:pants": lambda p: f"{os.sep}hat{os.sep}" in p or f"{os.sep}pants{os.sep}" in p,
        "after:2021-07 before:2021-08": lambda p: f"{os.sep}hat{os.sep}" in p,
        "before:2022": lambda p: f"{os.sep}hat{os.sep}" in p,
        "type:jpeg": lambda p: p.lower().endswith((".jpg", ".jpeg")),
    }
    for filters, passes in cases.items():
        keep = {i for i, p in paths.items() if passes(p)}
        assert keep, filters
        result = app.search(f"{query} {filters}", k=10)
        found = [hit.photo_id for hit in result.hits]
        assert set(found) <= keep, filters
        assert result.searched == len(keep), filters
        assert _recall(found, _exact(app, vector, keep, 10)) >= 0.98, filters
    # orientation and size read the stored pixel sizes
    sizes = {h.photo_id: (h.width, h.height) for h in app.search(query, k=100).hits}
    shapes = {
        "landscape": {i for i, (w, h) in sizes.items() if w and h and w > h},
        "portrait": {i for i, (w, h) in sizes.items() if w and h and w < h},
        "square": {i for i, (w, h) in sizes.items() if w and h and w == h},
    }
    assert any(shapes.values())
    for shape, want in shapes.items():
        if not want:
            with pytest.raises(ClipdeskError, match="no photo passes the filters"):
                app.search(f"{query} orientation:{shape}")
            continue
        got = {hit.photo_id for hit in app.search(f"{query} orientation:{shape}", k=100).hits}
        assert got == want, shape
    biggest = max(w * h for w, h in sizes.values() if w and h)
    got = {hit.photo_id for hit in app.search(f"{query} minpx:{biggest}", k=100).hits}
    assert got == {i for i, (w, h) in sizes.items() if w and h and w * h >= biggest}


def test_filters_that_let_nothing_through_or_name_nothing_say_so(
    app: Clipdesk, photos: Path, tiny_spec: ModelSpec
) -> None:
    _indexed(app, photos, tiny_spec)
    with pytest.raises(ClipdeskError, match="no photo passes the filters"):
        app.search("shirt after:2099")
    with pytest.raises(ClipdeskError, match="no folder named 'Holidays'"):
        app.search("shirt in:Holidays")
    with pytest.raises(ClipdeskError, match="not a folder of the library"):
        app.search(f"shirt in:{photos.parent / 'elsewhere'}")
    with pytest.raises(ClipdeskError, match="no tag named 'family'"):
        app.search("shirt tag:family")


def test_query_arithmetic_matches_the_numpy_reference(
    app: Clipdesk, photos: Path, tiny_spec: ModelSpec
) -> None:
    _indexed(app, photos, tiny_spec)
    encode = app.query_encoder().encode_texts
    shoe = sorted((photos / "shoes").iterdir())[0]
    stored = dict(zip(*_stored(app), strict=True))
    shoe_id = next(i for i, p in _paths_by_id(app).items() if p == str(shoe))
    cases = [
        ("beach -people", [encode(["beach"])[0], encode(["people"])[0]], [1.0, -1.0], set()),
        ("2:sunset + dress", [encode(["sunset"])[0], encode(["dress"])[0]], [2.0, 1.0], set()),
        (f"red + {shoe}", [encode(["red"])[0], stored[shoe_id]], [1.0, 1.0], {shoe_id}),
        (f"red -photo:{shoe_id}", [encode(["red"])[0], stored[shoe_id]], [1.0, -1.0], set()),
    ]
    for text, vectors, weights, left_out in cases:
        want = combine(np.stack(vectors), weights)
        got = [hit.photo_id for hit in app.search(text, k=10).hits]
        ranking = [i for i in _exact(app, want, None, 40) if i not in left_out][:10]
        assert got == ranking, text


def test_more_like_these_averages_the_photos_and_leaves_them_out(
    app: Clipdesk, photos: Path, tiny_spec: ModelSpec
) -> None:
    _indexed(app, photos, tiny_spec)
    chosen = sorted((photos / "dress").iterdir())[:2]
    by_path = {p: i for i, p in _paths_by_id(app).items()}
    ids = [by_path[str(p)] for p in chosen]
    stored = dict(zip(*_stored(app), strict=True))
    want = combine(np.stack([stored[i] for i in ids]))
    result = app.search("", like=chosen, k=10)
    got = [hit.photo_id for hit in result.hits]
    assert not set(got) & set(ids)
    assert got == [i for i in _exact(app, want, None, 12) if i not in ids][:10]


def test_date_order_and_a_search_of_filters_only(
    app: Clipdesk, photos: Path, tiny_spec: ModelSpec
) -> None:
    for number, photo in enumerate(sorted(photos.rglob("*.jpg"))):
        stamp = 1_600_000_000 + number * 86_400
        os.utime(photo, (stamp, stamp))
    _indexed(app, photos, tiny_spec)
    for sort, reverse in (("newest", True), ("oldest", False)):
        hits = app.search("a photo of a hat", k=12, sort=sort).hits  # type: ignore[arg-type]
        times = [hit.taken_at for hit in hits]
        assert times == sorted(times, reverse=reverse) and len(hits) == 12
    listed = app.search("in:hat").hits
    assert {Path(h.path).parent.name for h in listed} == {"hat"} and len(listed) == 3
    assert [h.taken_at for h in listed] == sorted((h.taken_at for h in listed), reverse=True)
    with pytest.raises(ClipdeskError, match="empty"):
        app.search("   ")
    assert app.search("", filters=Filters(folders=(str(photos / "hat"),))).searched == 3


def test_parsed_queries_and_cli_filters_merge(
    app: Clipdesk, photos: Path, tiny_spec: ModelSpec
) -> None:
    _indexed(app, photos, tiny_spec)
    result = app.search(parse_query("shirt in:hat"), filters=Filters(folders=("pants",)), k=30)
    assert {Path(h.path).parent.name for h in result.hits} == {"hat", "pants"}


def _no_model() -> ClipEncoder:
    raise AssertionError("a search by stored vectors loaded a model")


@pytest.fixture(scope="module")
def clothing_encoder() -> ClipEncoder:
    return ClipEncoder(ModelSpec.parse(CLOTHING_SPEC, CLOTHING_CONFIG), "cpu")


def test_the_cutoff_keeps_the_relevant_photos_and_finds_none_for_an_absent_class(
    tmp_path: Path, photos: Path, clothing_encoder: ClipEncoder
) -> None:
    """The trained model on its held-out photos: 3 per class, hats removed."""
    shutil.rmtree(photos / "hat")
    library = Library(tmp_path / "clothing-library")
    try:
        app = Clipdesk(library)
        app.preload(clothing_encoder)
        _indexed(app, photos, clothing_encoder.spec)
        present = app.search("a photo of shoes", cutoff=True)
        assert present.cutoff is not None and 1 <= present.cutoff.count < 27
        kept = [Path(h.path).parent.name for h in present.hits]
        assert kept.count("shoes") >= 2 and kept.count("shoes") / len(kept) >= 0.5
        plain = app.search("a photo of shoes")
        assert len(plain.hits) == 20 and plain.cutoff is None
        absent = app.search("a photo of a hat", cutoff=True)
        assert absent.cutoff is not None and len(absent.hits) <= 2
        newest = app.search("a photo of shoes", cutoff=True, sort="newest")
        assert {h.photo_id for h in newest.hits} == {h.photo_id for h in present.hits}
        # a filter that keeps only matches: the bulk is still the library's
        inside = app.search("a photo of shoes in:shoes", cutoff=True)
        assert inside.searched == 3 and len(inside.hits) >= 2
        # the generic-prompt vector is kept: a search by a stored vector needs no model
        app.serving.forget(clothing_encoder.spec.key)
        fresh = Clipdesk(library)
        fresh.serving.query_encoder = _no_model  # type: ignore[method-assign]
        shoe = sorted((photos / "shoes").iterdir())[0]
        alike = fresh.search("", like=[shoe], cutoff=True)
        assert alike.cutoff is not None and shoe.name not in {Path(h.path).name for h in alike.hits}
    finally:
        library.close()
