"""The graph's search breadth (clipdesk.search.breadth): ef follows the recall measured on
held-out photos, the time measured on this CPU and the budget, and is recorded with the
index."""

from __future__ import annotations

import ctypes
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import text

from clipdesk.library import Library, db
from clipdesk.search import breadth
from clipdesk.search.breadth import EfCurve, choose_ef
from clipdesk.search.vector_index import EF_SEARCH, VectorIndex
from tests.unit.test_filtered_search import DIM, PHOTOS, _library

EFS = [32, 64, 128, 256, 512, 1024]


def _curve(recall: list[float], ms: list[float], live: int = 1000) -> EfCurve:
    return EfCurve(EFS, recall, [m / 1000 for m in ms], live)


def test_the_smallest_ef_that_reaches_the_recall_target_is_chosen() -> None:
    curve = _curve([0.6, 0.8, 0.9, 0.97, 0.985, 0.995], [1, 2, 4, 8, 16, 32])
    assert choose_ef(curve, 10, target=0.98, budget=0.003) == 512  # over budget: recall wins
    assert choose_ef(curve, 10, target=0.95, budget=0.003) == 256
    assert choose_ef(curve, 600, target=0.95, budget=0.003) == 600  # never below k


def test_a_cpu_with_time_to_spare_spends_it_on_recall() -> None:
    slow = _curve([0.6, 0.8, 0.9, 0.985, 0.99, 0.995], [1, 2, 4, 8, 16, 32])
    fast = slow.scaled(0.1)  # the same graph on a CPU ten times as fast
    assert choose_ef(slow, 10, target=0.98, budget=0.005) == 256
    assert choose_ef(fast, 10, target=0.98, budget=0.005) == 1024
    assert choose_ef(slow.scaled(2.0), 10, target=0.98, budget=0.005) == 256


def test_a_bigger_library_needs_a_wider_search() -> None:
    small = _curve([0.9, 0.97, 0.99, 1.0, 1.0, 1.0], [1, 2, 4, 8, 16, 32], live=10_000)
    big = _curve([0.5, 0.7, 0.85, 0.93, 0.982, 0.99], [1, 2, 4, 8, 16, 32], live=1_000_000)
    assert choose_ef(small, 10, budget=0.0) == 128
    assert choose_ef(big, 10, budget=0.0) == 512
    nowhere = _curve([0.5, 0.7, 0.85, 0.93, 0.95, 0.96], [1, 2, 4, 8, 16, 32])
    assert choose_ef(nowhere, 10, budget=0.0) == 1024  # the best it measured


def test_the_curve_survives_json_and_bad_data_is_ignored() -> None:
    curve = _curve([0.6, 0.8, 0.9, 0.97, 0.985, 0.995], [1, 2, 4, 8, 16, 32])
    curve.probe_ids = [3, 4]
    again = EfCurve.from_json(json.loads(json.dumps(curve.to_json())))
    assert again is not None and again.efs == EFS and again.probe_ids == [3, 4]
    assert again.recall == curve.recall and again.live == 1000
    assert EfCurve.from_json(None) is None
    uneven = {"efs": [1, 2], "recall": [1.0], "seconds": [1, 2], "live": 3}
    assert EfCurve.from_json(uneven) is None


def test_held_out_truth_is_the_exact_top_ten() -> None:
    rng = np.random.default_rng(0)
    rows = rng.standard_normal((500, 8)).astype(np.float32)
    queries = rng.standard_normal((5, 8)).astype(np.float32)
    held = breadth.HeldOut(np.arange(5), queries)
    for start in range(0, 500, 64):  # as the rows stream in
        held.add(np.arange(start, min(start + 64, 500)) + 100, rows[start : start + 64])
    expected = [set((np.argsort(-(rows @ q))[:10] + 100).tolist()) for q in queries]
    assert held.truth() == expected


def _pointer(index: VectorIndex) -> dict[str, object]:
    meta: dict[str, object] = json.loads(index.meta_path.read_text())
    return meta


@pytest.fixture()
def library(tmp_path: Path) -> tuple[Library, np.ndarray]:
    return _library(tmp_path / "library")


def test_a_rebuild_measures_recall_on_held_out_photos_and_records_it(
    library: tuple[Library, np.ndarray],
) -> None:
    lib, vectors = library
    index = VectorIndex(lib, "m", 1, DIM)
    index.ensure_current()
    curve = EfCurve.from_json(_pointer(index)["ef_curve"])
    assert curve is not None and curve.live == PHOTOS - breadth.HELD_OUT
    assert len(curve.probe_ids) == breadth.PROBES
    # Each probe photo (one of the held-out ones) is in the graph now, found as itself.
    for pid in curve.probe_ids:
        assert index.search(vectors[pid - 1], 1)[0][0] == pid
    chosen = curve.recall[curve.efs.index(index.ef)] if index.ef in curve.efs else 1.0
    assert chosen >= breadth.RECALL_TARGET
    assert index.ef == choose_ef(curve, breadth.K)


def _record(index: VectorIndex, factor: float) -> list[int]:
    """Rewrite the pointer as if its times had been measured on a CPU 1 / ``factor`` times
    as fast as this one, and its recall were that of a harder library (the target
    reached at the 6th ef); returns the efs."""
    meta = _pointer(index)
    curve = EfCurve.from_json(meta["ef_curve"])
    assert curve is not None and len(curve.efs) > 6
    hard = [min(1.0, 0.5 + 0.1 * i) for i in range(len(curve.efs))]
    meta["ef_curve"] = EfCurve(
        curve.efs, hard, [s * factor for s in curve.seconds], curve.live, curve.probe_ids
    ).to_json()
    index.meta_path.write_text(json.dumps(meta))
    return curve.efs


def _loaded(lib: Library) -> VectorIndex:
    index = VectorIndex(lib, "m", 1, DIM)
    index.ensure_current()
    assert index.last_action == "loaded"
    return index


def test_a_loading_process_times_this_cpu_and_chooses_from_it(
    library: tuple[Library, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    lib, _ = library
    VectorIndex(lib, "m", 1, DIM).ensure_current()  # built, measured, saved
    # A second per search is far more than any search here takes (5,000 photos of 32-d).
    monkeypatch.setattr(breadth, "GRAPH_BUDGET_S", 1.0)
    efs = _record(_loaded(lib), 1e5)  # recorded on a CPU far slower than this one
    assert _loaded(lib).ef == efs[-1]  # timed here: every ef fits, the widest is taken
    monkeypatch.setattr(breadth, "GRAPH_BUDGET_S", 0.0)
    assert _loaded(lib).ef == efs[5]  # no time to spare: the recall target decides
    _record(_loaded(lib), 1e-5)  # recorded on a CPU far faster
    assert _loaded(lib).ef == efs[5]


def test_the_breadth_is_measured_again_when_the_library_doubles(
    library: tuple[Library, np.ndarray],
) -> None:
    lib, _ = library
    index = VectorIndex(lib, "m", 1, DIM)
    index.ensure_current()
    measured = index.ef_curve
    assert measured is not None
    rng = np.random.default_rng(9)
    extra = rng.standard_normal((PHOTOS, DIM)).astype(np.float32)
    extra /= np.linalg.norm(extra, axis=1, keepdims=True)
    ids = np.arange(PHOTOS + 1, 2 * PHOTOS + 1)
    with lib.engine.connect() as conn:
        generation = db.current_generation(conn)
    index.add(ids[:10], extra[:10], before=generation, after=generation)
    assert index.ef_curve is measured  # grown a little: the measurement stands
    index.add(ids[10:], extra[10:], before=generation, after=generation)
    assert index.ef_curve is not measured and index.ef_curve is not None
    assert index.ef_curve.live == PHOTOS + 10  # measured before the new photos joined
    assert EF_SEARCH  # the fallback exists for graphs never measured


def _vm_flags(address: int) -> str:
    flags, inside = "", False
    with open("/proc/self/smaps", encoding="ascii", errors="replace") as fh:
        for line in fh:
            head = line.split()[0]
            if "-" in head and not head.endswith(":"):
                low, high = (int(x, 16) for x in head.split("-"))
                inside = low <= address < high
            elif inside and head == "VmFlags:":
                flags = line
    return flags


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux's madvise")
def test_a_large_new_allocation_is_offered_huge_pages() -> None:
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    before = breadth.anonymous_regions()
    block = libc.malloc(96 * 2**20)  # as hnswlib allocates its level-0 block
    try:
        assert " hg" not in _vm_flags(block + 2**20)
        assert breadth.advise_huge_pages(before, collapse=False) >= 64 * 2**20
        assert " hg" in _vm_flags(block + 2**20)  # the kernel's mark of MADV_HUGEPAGE
        small_before = breadth.anonymous_regions()
        small = libc.malloc(2**20)
        assert breadth.advise_huge_pages(small_before, collapse=False) == 0
        libc.free(small)
    finally:
        libc.free(block)


def test_a_catch_up_that_doubles_the_library_measures_the_breadth_again(
    library: tuple[Library, np.ndarray],
) -> None:
    lib, _ = library
    VectorIndex(lib, "m", 1, DIM).ensure_current()
    rng = np.random.default_rng(4)
    extra = rng.standard_normal((PHOTOS, DIM)).astype(np.float32)
    extra /= np.linalg.norm(extra, axis=1, keepdims=True)
    with lib.engine.begin() as conn:  # another process indexed as many photos again
        conn.execute(
            text(
                "INSERT INTO photos (id, root_id, path, size, mtime_ns, fingerprint, width, "
                "height, taken_at, taken_from_exif, error) VALUES (:id, 1, :path, 1, 1, :fp, "
                "10, 10, 0, 0, NULL)"
            ),
            [{"id": PHOTOS + i + 1, "path": f"/p/x{i}.jpg", "fp": f"x{i}"} for i in range(PHOTOS)],
        )
        conn.execute(
            text("INSERT INTO embeddings (fingerprint, model_id, vector) VALUES (:fp, 1, :v)"),
            [{"fp": f"x{i}", "v": extra[i].tobytes()} for i in range(PHOTOS)],
        )
    other = VectorIndex(lib, "m", 1, DIM)
    other.search(extra[0], 1)
    assert other.last_action == "caught up"
    assert other.ef_curve is not None and other.ef_curve.live == PHOTOS  # before the new
    recorded = EfCurve.from_json(_pointer(other)["ef_curve"])
    assert recorded is not None and recorded.live == PHOTOS
