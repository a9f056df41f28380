"""The int8 copy of the vectors that a one-shot process (a CLI search) scans instead of
loading the HNSW graph: same results, never stale, never deleted photos, crash-safe."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from clipdesk.library import Library
from clipdesk.library.scanning import scan_folders
from clipdesk.models.encoder import ClipEncoder
from clipdesk.progress import CancelToken
from clipdesk.search.compact import quantize
from clipdesk.services import Clipdesk

QUERIES = ["a photo of shoes", "a dress", "a hat on a table", "trousers"]


def _fresh(library: Library, encoder: ClipEncoder) -> Clipdesk:
    """A new service on the same library, as a new CLI process is (cold, one query)."""
    app = Clipdesk(library)
    app.preload(encoder)
    app.cold_scan = True
    return app


def test_int8_scores_are_within_a_few_thousandths() -> None:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(2000, 512)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    codes, scales = quantize(vectors)
    query = vectors[7]
    approx = (codes.astype(np.float32) @ query) * scales
    assert np.max(np.abs(approx - vectors @ query)) < 2e-3


def test_cold_search_equals_the_graph_without_loading_it(
    app: Clipdesk, photos: Path, tiny_encoder: ClipEncoder
) -> None:
    app.add_folders([photos])
    list(app.index(tiny_encoder.spec))
    warm = {q: [(h.path, h.score) for h in app.search_text(q, k=10)] for q in QUERIES}
    cold_app = _fresh(app.library, tiny_encoder)
    for query in QUERIES:
        got = [(h.path, h.score) for h in cold_app.search_text(query, k=10)]
        assert [p for p, _ in got] == [p for p, _ in warm[query]]
        assert np.allclose([s for _, s in got], [s for _, s in warm[query]], atol=1e-5)
    photo = cold_app.find_photo(warm[QUERIES[0]][0][0])
    assert photo is not None
    similar = cold_app.similar(photo, k=5)
    assert [h.path for h in similar] == [h.path for h in app.similar(photo, k=5)]
    index = cold_app.vector_index()
    assert index._index is None and len(index) == 30  # the graph was never read


def test_cold_search_never_shows_deleted_or_stale_photos(
    app: Clipdesk, photos: Path, tiny_encoder: ClipEncoder
) -> None:
    app.add_folders([photos])
    list(app.index(tiny_encoder.spec))
    best = app.search_text(QUERIES[0], k=1)[0].path
    Path(best).unlink()
    list(app.index())  # the indexer forgets it; the copy keeps the row until rewritten
    cold_app = _fresh(app.library, tiny_encoder)
    hits = cold_app.search_text(QUERIES[0], k=29)
    assert best not in [h.path for h in hits] and len(hits) == 29
    assert cold_app.vector_index()._index is None

    # A change the copy has not seen (a scan found a copy of a photo, searchable at once
    # through its known vector): the generations differ, so the graph answers.
    other = photos.parent / "more"
    other.mkdir()
    (other / "copy.jpg").write_bytes(next(photos.rglob("*.jpg")).read_bytes())
    app.add_folders([other])
    list(scan_folders(app.library, CancelToken()))
    stale_app = _fresh(app.library, tiny_encoder)
    stale_app.search_text(QUERIES[0], k=5)
    assert stale_app.vector_index()._index is not None


def test_a_crashed_append_is_cut_off(
    app: Clipdesk, photos: Path, tiny_encoder: ClipEncoder
) -> None:
    app.add_folders([photos])
    some = sorted(photos.rglob("*.jpg"))
    hidden = some[-3:]
    for path in hidden:  # index all but three, then add them in a second run
        path.rename(path.with_suffix(".later"))
    list(app.index(tiny_encoder.spec))
    index = app.vector_index()
    for part in ("ids", "codes", "scales"):  # a writer killed halfway through an append
        with open(index.compact._paths[part], "ab") as fh:
            fh.write(b"\x7f" * 1001)
    cold = _fresh(app.library, tiny_encoder).search_text(QUERIES[1], k=27)
    assert len(cold) == 27
    for path in hidden:
        path.with_suffix(".later").rename(path)
    list(app.index())
    rows = index.compact.rows()
    assert rows == 30
    assert index.compact._paths["ids"].stat().st_size == 8 * rows  # garbage gone
    assert index.compact._paths["codes"].stat().st_size == rows * index.dim
    cold = _fresh(app.library, tiny_encoder).search_text(QUERIES[1], k=30)
    assert len(cold) == 30
