"""Filtered nearest-neighbour search (VectorIndex.search with allowed ids): the exact route
for few allowed photos, the graph route with ef raised as the filter narrows, each against
a brute-force ranking of the stored vectors."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import text

from clipdesk.library import Library
from clipdesk.search import vector_index as vi
from clipdesk.search.vector_index import VectorIndex

DIM = 32
PHOTOS = 5000


def _library(folder: Path) -> tuple[Library, np.ndarray]:
    """A library of PHOTOS low-rank unit vectors (no files: only the search is used)."""
    library = Library(folder)
    rng = np.random.default_rng(0)
    basis = rng.standard_normal((8, DIM)).astype(np.float32)
    vectors = rng.standard_normal((PHOTOS, 8)).astype(np.float32) @ basis
    vectors += 0.05 * rng.standard_normal((PHOTOS, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    with library.engine.begin() as conn:
        conn.execute(text("INSERT INTO roots (path, added_at) VALUES ('/p', 0)"))
        conn.execute(
            text(
                "INSERT INTO models (key, spec, dim, config_json, created_at) "
                "VALUES ('m', 'm', :d, NULL, 0)"
            ),
            {"d": DIM},
        )
        conn.execute(
            text(
                "INSERT INTO photos (id, root_id, path, size, mtime_ns, fingerprint, width, "
                "height, taken_at, taken_from_exif, error) VALUES (:id, 1, :path, 1, 1, :fp, "
                "10, 10, 0, 0, NULL)"
            ),
            [{"id": i + 1, "path": f"/p/{i}.jpg", "fp": f"f{i}"} for i in range(PHOTOS)],
        )
        conn.execute(
            text("INSERT INTO embeddings (fingerprint, model_id, vector) VALUES (:fp, 1, :v)"),
            [{"fp": f"f{i}", "v": vectors[i].tobytes()} for i in range(PHOTOS)],
        )
    return library, vectors


def _index(library: Library) -> VectorIndex:
    return VectorIndex(library, "m", 1, DIM)


def _exact(vectors: np.ndarray, query: np.ndarray, allowed: set[int], k: int) -> list[int]:
    ids = np.array(sorted(allowed))
    scores = vectors[ids - 1] @ query
    return [int(i) for i in ids[np.argsort(-scores, kind="stable")[:k]]]


@pytest.fixture()
def built(tmp_path: Path) -> tuple[Library, np.ndarray]:
    library, vectors = _library(tmp_path / "library")
    index = _index(library)
    with library.exclusive("indexing"):  # as the indexer: the int8 copy is written too
        index.ensure_current()
        index.save()
    return library, vectors


def _queries(count: int) -> np.ndarray:
    q = np.random.default_rng(1).standard_normal((count, DIM)).astype(np.float32)
    unit: np.ndarray = q / np.linalg.norm(q, axis=1, keepdims=True)
    return unit


def test_a_few_allowed_photos_are_ranked_exactly(built: tuple[Library, np.ndarray]) -> None:
    library, vectors = built
    index = _index(library)
    rng = np.random.default_rng(2)
    for size in (5, 50, 1500):
        allowed = set((rng.choice(PHOTOS, size, replace=False) + 1).tolist())
        for query in _queries(5):
            got = index.search(query, 10, None, allowed)
            assert [pid for pid, _ in got] == _exact(vectors, query, allowed, 10)
            scores = vectors[np.array([pid for pid, _ in got]) - 1] @ query
            assert np.allclose([s for _, s in got], scores, atol=1e-5)
        best = _exact(vectors, _queries(1)[0], allowed, 1)[0]
        excluded = index.search(_queries(1)[0], 10, best, allowed)
        assert best not in [pid for pid, _ in excluded] and len(excluded) == min(10, size - 1)


def test_a_one_shot_filtered_search_reads_no_graph(built: tuple[Library, np.ndarray]) -> None:
    library, vectors = built
    cold = _index(library)
    cold.cold_scan = True
    allowed = set(range(1, PHOTOS + 1, 7))
    query = _queries(1)[0]
    started = time.perf_counter()
    got = cold.search(query, 10, None, allowed)
    assert time.perf_counter() - started < 5
    assert [pid for pid, _ in got] == _exact(vectors, query, allowed, 10)
    assert cold._index is None  # answered from the int8 copy and SQLite


def test_without_the_int8_copy_many_allowed_go_through_the_graph(
    built: tuple[Library, np.ndarray],
) -> None:
    library, vectors = built
    index = _index(library)
    index.compact.pointer.unlink()
    few = set(range(1, 1500, 3))
    many = set(range(1, PHOTOS + 1, 2))
    query = _queries(1)[0]
    assert [pid for pid, _ in index.search(query, 10, None, few)] == _exact(vectors, query, few, 10)
    assert not index._exact_affordable(len(many), PHOTOS, 10)
    got = [pid for pid, _ in index.search(query, 10, None, many)]
    assert len(set(got) & set(_exact(vectors, query, many, 10))) >= 9


def test_the_graph_route_raises_ef_as_the_filter_narrows(
    built: tuple[Library, np.ndarray],
) -> None:
    assert vi.filtered_ef(10, 0.5) == vi.EF_SEARCH
    assert vi.filtered_ef(10, 0.005) == 2000
    assert vi.filtered_ef(10, 0.0001) == vi.FILTER_EF_CAP
    assert vi.filtered_ef(600, 0.9) == 667
    library, vectors = built
    index = _index(library)
    index.route_costs = vi.RouteCosts(score_row=1.0, read_row=1.0)  # every filter: the graph
    rng = np.random.default_rng(3)
    for share in (0.01, 0.1, 0.5):
        allowed = set((rng.choice(PHOTOS, int(share * PHOTOS), replace=False) + 1).tolist())
        recalls = []
        for query in _queries(20):
            got = [pid for pid, _ in index.search(query, 10, None, allowed)]
            assert set(got) <= allowed
            recalls.append(len(set(got) & set(_exact(vectors, query, allowed, 10))) / 10)
        assert np.mean(recalls) >= 0.98, share


def test_a_filtered_graph_search_is_never_narrower_than_the_measured_breadth(
    built: tuple[Library, np.ndarray],
) -> None:
    library, _vectors = built
    index = _index(library)
    index.route_costs = vi.RouteCosts(score_row=1.0, read_row=1.0)  # every filter: the graph
    index.ensure_current()
    used: list[int] = []

    class Spy:
        def __init__(self, graph: object) -> None:
            self.graph = graph

        def set_ef(self, ef: int) -> None:
            used.append(ef)
            self.graph.set_ef(ef)  # type: ignore[attr-defined]

        def __getattr__(self, name: str) -> object:
            return getattr(self.graph, name)

    index._index = Spy(index._index)  # type: ignore[assignment]
    index.ef = vi.EF_SEARCH + 300  # as a measured breadth wider than the default
    half = set(range(1, PHOTOS + 1, 2))
    index.search(_queries(1)[0], 10, None, half)
    assert used and used[0] == vi.EF_SEARCH + 300  # k / selectivity alone would be 512


def test_the_route_switches_where_the_estimated_costs_cross() -> None:
    """The exact route's cost grows with the allowed photos, the graph's falls as the filter
    widens: the switch point follows the measured costs and the library's size."""
    costs = vi.RouteCosts(score_row=1.5e-6, read_row=2e-5, graph_unit=2e-5)

    def switch(live: int, costs: vi.RouteCosts) -> int:
        sizes = [int(live * share) for share in np.geomspace(1e-4, 1, 400)]
        exact = [vi.exact_filter(size, live, 10, True, costs) for size in sizes]
        assert exact == sorted(exact, reverse=True)  # exact below one size, graph above
        return max(size for size, e in zip(sizes, exact, strict=True) if e)

    at_100k, at_1m = switch(100_000, costs), switch(1_000_000, costs)
    assert 5_000 < at_100k < at_1m < 100_000
    assert at_1m / at_100k < 10  # grows slower than the library (the graph costs ef/sqrt(s))
    slow_graph = vi.RouteCosts(score_row=1.5e-6, read_row=2e-5, graph_unit=8e-5)
    assert switch(1_000_000, slow_graph) > 2 * at_1m
    # Without the int8 copy every allowed vector is read from SQLite: far fewer go exact.
    assert not vi.exact_filter(at_1m, 1_000_000, 10, False, costs)


def test_route_costs_follow_what_the_searches_measure() -> None:
    costs = vi.RouteCosts(score_row=1e-6, read_row=1e-5, graph_unit=1e-5)
    for _ in range(40):
        costs.observe("graph_unit", 0.5, 1000)  # this machine's graph: 5e-4 s a unit
    assert costs.graph_unit == pytest.approx(5e-4, rel=1e-3)
    assert costs.score_row == 1e-6
    costs.observe("read_row", 0.0, 100)  # nothing measured: nothing changes
    assert costs.read_row == 1e-5


def test_a_search_takes_the_route_its_measured_costs_favour(
    built: tuple[Library, np.ndarray],
) -> None:
    library, vectors = built
    index = _index(library)
    allowed = set(range(1, PHOTOS + 1, 2))  # half the photos
    query = _queries(1)[0]
    index.route_costs = vi.RouteCosts(score_row=1e-6, read_row=1e-5, graph_unit=1e-6)
    index.search(query, 10, None, allowed)
    assert index.route_costs.graph_unit != 1e-6  # the graph answered, and was timed
    assert index.route_costs.score_row == 1e-6
    for _ in range(30):  # as if every graph search here had taken a second
        index.route_costs.observe("graph_unit", 1.0, vi.EF_SEARCH)
    got = index.search(query, 10, None, allowed)
    assert index.route_costs.score_row != 1e-6  # now ranked exactly
    assert [pid for pid, _ in got] == _exact(vectors, query, allowed, 10)
