"""The grouping rules on their own (no library): the derived threshold across models'
cosine scales, components, the guard against drifting chains, bursts, names of edits."""

from __future__ import annotations

import numpy as np

from clipdesk.duplicates.finding import is_burst
from clipdesk.duplicates.grouping import (
    NeighbourLists,
    components,
    derived_threshold,
    fence_is_rough,
    near_groups,
    quantile_se,
)
from clipdesk.duplicates.keep import Facts, looks_edited, ranked, reasons


def _lists(vectors: np.ndarray, k: int = 5) -> NeighbourLists:
    """Exact neighbour lists of unit vectors (ids 1..n)."""
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -2.0)
    order = np.argsort(-sims, axis=1)[:, :k]
    ids = np.arange(1, len(vectors) + 1)
    return NeighbourLists(ids, ids[order], np.take_along_axis(sims, order, axis=1))


def _nearest_lists(distances: np.ndarray) -> NeighbourLists:
    """Lists whose only column is each content's nearest, at ``distances`` (1 - cosine)."""
    ids = np.arange(1, len(distances) + 1)
    partner = np.where(ids % 2 == 1, ids + 1, ids - 1)
    return NeighbourLists(ids, partner[:, None], (1.0 - distances)[:, None])


def test_the_derived_threshold_follows_the_model_s_cosine_scale() -> None:
    rng = np.random.default_rng(3)
    bulk = np.exp(rng.normal(np.log(0.1), 0.25, 160))  # photos merely alike
    planted = np.exp(rng.normal(np.log(0.003), 0.5, 40))  # duplicates: 20 % of the photos
    distances = np.concatenate([bulk, planted])
    spread = derived_threshold(_nearest_lists(distances))
    crowded = derived_threshold(_nearest_lists(distances * 0.2))  # cosines crowd near 1
    assert spread.derived and crowded.derived
    for threshold, scale in ((spread.value, 1.0), (crowded.value, 0.2)):
        found = 1.0 - distances * scale >= threshold
        assert found[160:].all() and not found[:160].any()
    assert abs((1 - crowded.value) - 0.2 * (1 - spread.value)) < 1e-3  # the same fence


def test_up_to_nearly_half_the_photos_duplicated_does_not_move_the_fence_onto_them() -> None:
    rng = np.random.default_rng(4)
    bulk = np.exp(rng.normal(np.log(0.1), 0.25, 110))
    planted = np.exp(rng.normal(np.log(0.003), 0.5, 90))
    threshold = derived_threshold(_nearest_lists(np.concatenate([bulk, planted]))).value
    assert (1.0 - planted >= threshold).all() and (1.0 - bulk < threshold).all()


def test_a_tiny_library_says_it_cannot_tell() -> None:
    lists = _nearest_lists(np.array([0.1, 0.1]))
    assert derived_threshold(lists).value == 1.0


def test_components_join_what_edges_join() -> None:
    labels = components(6, np.array([0, 1, 4]), np.array([1, 2, 5]))
    assert labels.tolist() == [0, 0, 0, 3, 4, 4]
    assert components(3, np.array([], np.int64), np.array([], np.int64)).tolist() == [0, 1, 2]


def test_a_chain_of_small_steps_is_cut_at_the_best_photo() -> None:
    """a ~ b, b ~ c, but a is not like c: the group keeps a and b (a is the best), not c."""
    angles = np.array([0.0, 0.14, 0.28, 2.0])  # radians on one circle; d is far away
    vectors = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    lists = _lists(vectors, k=3)
    threshold = float(np.cos(0.2))  # neighbours 0.14 apart pass; 0.28 apart do not
    groups = near_groups(
        lists, threshold, lambda ids: min(ids), lambda ids: vectors[np.array(ids) - 1]
    )
    assert groups == [[1, 2]]
    # with c as the best photo, c and b stay together instead
    groups = near_groups(
        lists, threshold, lambda ids: max(ids), lambda ids: vectors[np.array(ids) - 1]
    )
    assert groups == [[2, 3]]


def _facts(
    pid: int, path: str, size: int, wh: tuple[int, int], sharp: float, **kw: object
) -> Facts:
    values: dict[str, object] = {
        "photo_id": pid,
        "path": path,
        "size": size,
        "mtime_ns": 0,
        "width": wh[0],
        "height": wh[1],
        "taken_at": 0.0,
        "taken_from_exif": False,
        "camera": None,
        "fingerprint": f"f{pid}",
        "sharpness": sharp,
        "exif_fields": 0,
        "edited": looks_edited(path),
    }
    values.update(kw)
    return Facts(**values)  # type: ignore[arg-type]


def test_edits_and_copies_are_known_by_their_names() -> None:
    for name in (
        "IMG_1 (1).jpg",
        "x-edited.jpg",
        "x copy.jpg",
        "Kopie von x.jpg",
        "x-1.jpg",
        "x~2.png",
    ):
        assert looks_edited(f"/p/{name}"), name
    for name in ("IMG_0001.jpg", "DSC01234.JPG", "holiday.jpg", "2023-07-01 12.00.00.jpg"):
        assert not looks_edited(f"/p/{name}"), name


def test_the_suggestion_prefers_pixels_then_the_original_then_bytes() -> None:
    original = _facts(1, "/p/a.jpg", 900_000, (4000, 3000), 0.30, exif_fields=8)
    smaller = _facts(2, "/p/b.jpg", 300_000, (2000, 1500), 0.32)
    edited = _facts(3, "/p/a-edited.jpg", 950_000, (4000, 3000), 0.31, exif_fields=8)
    reencoded = _facts(4, "/q/a.jpg", 500_000, (4000, 3000), 0.31, exif_fields=8)
    order = [f.photo_id for f, _ in ranked([smaller, edited, reencoded, original])]
    assert order[0] == 1 and order[-1] == 2
    blurred = _facts(5, "/p/c.jpg", 900_000, (4000, 3000), 0.10, exif_fields=8)
    assert ranked([blurred, original])[0][0].photo_id == 1


def test_a_burst_is_near_duplicates_seconds_apart_by_the_camera() -> None:
    frames = [
        _facts(i, f"/p/{i}.jpg", 1, (1, 1), 0.1, taken_at=100.0 + 0.4 * i, taken_from_exif=True)
        for i in range(4)
    ]
    assert is_burst(frames)
    assert not is_burst(
        [*frames, _facts(9, "/p/9.jpg", 1, (1, 1), 0.1, taken_at=200.0, taken_from_exif=True)]
    )
    assert not is_burst(
        [_facts(i, f"/p/{i}.jpg", 1, (1, 1), 0.1, fingerprint="same") for i in range(2)]
    )
    assert not is_burst(
        [f if f.photo_id else _facts(0, "/p/0.jpg", 1, (1, 1), 0.1) for f in frames]
    )


def test_without_a_mode_of_duplicates_the_fence_holds_and_with_one_the_valley_is_found() -> None:
    rng = np.random.default_rng(5)
    bulk = np.exp(rng.normal(np.log(0.1), 0.25, 400))
    alone = derived_threshold(_nearest_lists(bulk))
    assert "Tukey" in alone.how and "Otsu" not in alone.how
    assert (1.0 - bulk >= alone.value).sum() <= 4  # the outliers of the bulk only
    planted = np.exp(rng.normal(np.log(0.002), 0.3, 40))
    both = derived_threshold(_nearest_lists(np.concatenate([bulk, planted])))
    assert "Otsu" in both.how and both.value > alone.value
    assert (1.0 - planted >= both.value).all() and not (1.0 - bulk >= both.value).any()


def test_exact_copies_of_one_name_are_not_said_to_differ_by_name() -> None:
    kept = _facts(1, "/p/IMG_0001.jpg", 5, (4, 3), 0.3, fingerprint="same", mtime_ns=10)
    backup = _facts(
        2, "/p/backup copy/IMG_0001.jpg", 5, (4, 3), 0.3, fingerprint="same", mtime_ns=10
    )
    order = [f for f, _ in ranked([backup, kept])]
    assert order[0] is kept  # the same time: the shorter path
    said = reasons(kept, [backup], tied=True)
    assert said == ["same content; kept the oldest file, then the shortest path"]
    older = _facts(2, "/p/backup copy/IMG_0001.jpg", 5, (4, 3), 0.3, fingerprint="same", mtime_ns=5)
    assert reasons(older, [kept], tied=True) == ["same content; kept the oldest file"]
    # near-duplicates with the same name: no word about names
    smaller = _facts(3, "/p/backup copy/IMG_0001.jpg", 2, (2, 1), 0.3, edited=True)
    assert not any(
        "name" in r for r in reasons(_facts(4, "/p/IMG_0001.jpg", 5, (4, 3), 0.3), [smaller], False)
    )
    kept_too = _facts(4, "/p/IMG_0001.jpg", 5, (4, 3), 0.3)
    edit = _facts(5, "/p/IMG_0001-edited.jpg", 2, (4, 3), 0.3)
    assert "original name (1 of the 2 others look like edits or copies)" in reasons(
        kept_too, [smaller, edit], False
    )


def test_the_fence_is_said_to_be_rough_from_its_own_standard_error() -> None:
    rng = np.random.default_rng(6)
    few = derived_threshold(_nearest_lists(np.exp(rng.normal(np.log(0.1), 0.25, 39))))
    many = derived_threshold(_nearest_lists(np.exp(rng.normal(np.log(0.1), 0.25, 2000))))
    assert (
        "(from 39 photos: rough)" in few.how and "derived from the library as it is now" in few.how
    )
    assert "(from 2,000 photos)" in many.how and "rough" not in many.how
    logs = np.sort(rng.normal(0.0, 1.0, 39))
    assert quantile_se(logs, 0.5) > quantile_se(np.sort(rng.normal(0.0, 1.0, 4000)), 0.5)
    assert fence_is_rough(logs) and not fence_is_rough(np.sort(rng.normal(0.0, 1.0, 4000)))
