"""The services end to end in-process, with the tiny open_clip model (random weights)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import func, select

from clipdesk.errors import ClipdeskError, NotIndexedError
from clipdesk.library import Library, db
from clipdesk.library.scanning import ScanReport, scan_folders
from clipdesk.models.encoder import ClipEncoder
from clipdesk.progress import CancelToken, Progress
from clipdesk.services import Clipdesk
from clipdesk.spec import ModelSpec
from tests.helpers import make_bad_files, stored_vectors, top_k


def _index(app: Clipdesk, spec: ModelSpec | None, **kwargs: Any) -> list[Progress]:
    return list(app.index(spec, "cpu", **kwargs))


def test_search_before_indexing_says_what_to_do(app: Clipdesk) -> None:
    with pytest.raises(NotIndexedError, match="clipdesk index"):
        app.search_text("a hat")


def test_index_embeds_every_photo_with_unit_vectors(
    app: Clipdesk, photos: Path, tiny_spec: ModelSpec
) -> None:
    app.add_folders([photos])
    progress = _index(app, tiny_spec, batch_size=8)
    embeds = [p for p in progress if p.phase == "embed"]
    # Progress per batch, not per photo: a small first batch (2), then 8 at a time.
    assert [p.done for p in embeds] == [2, 10, 18, 26, 30]
    assert embeds[-1].done == embeds[-1].total == 30
    assert embeds[-1].rate > 0
    status = app.status()
    assert (status.photos, status.indexed, status.pending, status.failed) == (30, 30, 0, [])
    assert status.random_weights and "random" in (status.model or "")
    assert status.device.startswith("cpu")
    _, vectors = stored_vectors(app)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_search_and_similar_match_brute_force(
    app: Clipdesk, photos: Path, tiny_spec: ModelSpec
) -> None:
    app.add_folders([photos])
    _index(app, tiny_spec)
    paths, vectors = stored_vectors(app)
    query = app.encoder().encode_texts(["a photo of a hat"])[0]
    hits = app.search_text("a photo of a hat", k=10)
    assert [h.path for h in hits] == [paths[i] for i in top_k(vectors, query, 10)]
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)
    assert np.allclose(scores, np.sort(vectors @ query)[::-1][:10], atol=1e-4)

    similar = app.similar(paths[3], k=10)
    assert paths[3] not in [h.path for h in similar]  # the photo itself is left out
    assert [h.path for h in similar] == [paths[i] for i in top_k(vectors, vectors[3], 10, 3)]


def test_search_by_an_outside_image(
    app: Clipdesk, photos: Path, tiny_spec: ModelSpec, tmp_path: Path
) -> None:
    app.add_folders([photos / "hat"])
    _index(app, tiny_spec)
    outside = tmp_path / "dropped.jpg"
    shutil.copy(next((photos / "shoes").glob("*.jpg")), outside)
    hits = app.search_image(outside, k=3)
    assert len(hits) == 3 and all("/hat/" in h.path for h in hits)
    (tmp_path / "bad.jpg").write_text("nope")
    with pytest.raises(ClipdeskError, match="cannot use"):
        app.search_image(tmp_path / "bad.jpg")


def test_deleted_files_never_appear_in_results(
    app: Clipdesk, photos: Path, tiny_spec: ModelSpec
) -> None:
    app.add_folders([photos])
    _index(app, tiny_spec)
    first = app.search_text("shoes", k=5)
    Path(first[0].path).unlink()  # deleted after indexing, before any rescan
    again = app.search_text("shoes", k=5)
    assert first[0].path not in [h.path for h in again]
    assert len(again) == 5
    _index(app, tiny_spec)  # the rescan sweeps it; the index catches up
    assert app.status().photos == 29
    assert first[0].path not in [h.path for h in app.search_text("shoes", k=29)]


def test_renamed_file_reuses_its_vector(app: Clipdesk, photos: Path, tiny_spec: ModelSpec) -> None:
    app.add_folders([photos])
    _index(app, tiny_spec)
    src = next((photos / "hat").glob("*.jpg"))
    dst = photos / "shoes" / "moved-hat.jpg"
    src.rename(dst)
    progress = _index(app, tiny_spec)
    embed = [p for p in progress if p.phase == "embed"]
    assert embed[-1].total == 0  # nothing was embedded again
    assert app.status().indexed == 30
    assert dst.as_posix() in [h.path for h in app.search_text("hat", k=30)]


def test_bad_files_are_recorded_and_do_not_stop_the_run(
    app: Clipdesk, photos: Path, tiny_spec: ModelSpec
) -> None:
    expected = make_bad_files(photos / "bad", next(photos.rglob("*.jpg")))
    app.add_folders([photos])
    _index(app, tiny_spec)
    status = app.status()
    assert status.indexed == 30
    reasons = {Path(p).name: r for p, r in status.failed}
    assert set(reasons) == set(expected)
    for name, part in expected.items():
        assert part in reasons[name]
    # Again, and a folder of bad files only: the failed files are decoded again (they may
    # have been half copied) and a batch of nothing but failures crashed the index.
    only_bad = photos.parent / "only-bad"
    make_bad_files(only_bad, next(photos.rglob("*.jpg")))
    app.add_folders([only_bad])
    for _ in range(2):
        _index(app, tiny_spec)
        again = app.status()
        assert again.indexed == 30
        assert len(again.failed) == 2 * len(expected)


def test_status_keeps_the_backend_indexing_chose_after_a_search(
    app: Clipdesk, photos: Path, tiny_spec: ModelSpec
) -> None:
    app.add_folders([photos])
    _index(app, tiny_spec)
    chosen = app.status().device
    assert "chosen by setting" in chosen  # the tests' CLIPDESK_BACKEND, as indexing said
    later = Clipdesk(app.library)  # a new process: the model loads again, for a search
    later.search_text("a hat", k=3)
    assert later.status().device == chosen  # not the bare "cpu: ..., fp32" of a load


def test_file_deleted_between_scan_and_decode(
    app: Clipdesk, library: Library, photos: Path, tiny_spec: ModelSpec
) -> None:
    app.add_folders([photos])
    for _ in scan_folders(app.library):
        pass
    victim = next(photos.rglob("*.jpg"))
    victim.unlink()
    # Index without rescanning: straight from the scan above to the embedding pipeline.
    from clipdesk.indexing.embedding import embed_pending

    encoder = app.encoder(tiny_spec)
    model = app.serving.record_model(encoder.spec, encoder.dim)
    progress = list(embed_pending(app.library, encoder, model.id))
    assert progress[-1].failed == 1 and progress[-1].done == 30
    with app.library.session() as s:
        error = s.scalar(select(db.Photo.error).where(db.Photo.path == str(victim)))
    assert error == "file vanished before it could be read"


def test_cancel_stops_between_batches_and_the_next_run_resumes(
    app: Clipdesk, photos: Path, tiny_spec: ModelSpec
) -> None:
    app.add_folders([photos])
    cancel = CancelToken()
    seen = []
    for p in app.index(tiny_spec, "cpu", cancel, batch_size=4):
        seen.append(p)
        if p.phase == "embed":
            cancel.cancel()
    assert app.status().indexed == 1  # the (small) first batch was committed
    progress = _index(app, tiny_spec, batch_size=4)
    embeds = [p for p in progress if p.phase == "embed"]
    assert embeds[-1].total == 29  # only the rest
    assert app.status().indexed == 30
    assert len(app.search_text("a dress", k=30)) == 30


def test_k_zero_and_empty_query(app: Clipdesk, photos: Path, tiny_spec: ModelSpec) -> None:
    app.add_folders([photos])
    _index(app, tiny_spec)
    assert app.search_text("hat", k=0) == []
    assert len(app.search_text("hat", k=100)) == 30
    with pytest.raises(ClipdeskError, match="empty"):
        app.search_text("   ")


def test_read_only_photo_folder_is_never_written(
    app: Clipdesk, photos: Path, tiny_spec: ModelSpec
) -> None:
    def snapshot() -> dict[str, tuple[int, int]]:
        return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in photos.rglob("*")}

    for folder in [photos, *[p for p in photos.rglob("*") if p.is_dir()]]:
        folder.chmod(0o555)
    try:
        before = snapshot()
        app.add_folders([photos])
        _index(app, tiny_spec)
        assert app.status().indexed == 30
        assert snapshot() == before
    finally:
        for folder in [photos, *[p for p in photos.rglob("*") if p.is_dir()]]:
            folder.chmod(0o755)


def test_scan_report_counts(app: Clipdesk, photos: Path, tiny_spec: ModelSpec) -> None:
    app.add_folders([photos])
    report = ScanReport()
    _index(app, tiny_spec, report=report)
    assert (report.seen, report.new) == (30, 30)
    with app.library.session() as s:
        assert s.scalar(select(func.count()).select_from(db.Embedding)) == 30


def test_switching_models_keeps_serving_the_old_vectors_until_complete(
    app: Clipdesk, photos: Path, tiny_spec: ModelSpec, tmp_path: Path
) -> None:
    import open_clip
    import torch
    from safetensors.torch import save_file

    from clipdesk.spec import ModelSpec
    from tests.helpers import TINY_CONFIG

    first = tiny_spec
    app.add_folders([photos])
    _index(app, first)
    # A second model: the same tiny architecture with other weights, from a file.
    config = tmp_path / "tiny-b.json"
    config.write_text(TINY_CONFIG.read_text())
    open_clip.add_model_config(config)
    torch.manual_seed(1)
    weights = tmp_path / "b.safetensors"
    save_file(open_clip.create_model("tiny-b", pretrained=None).state_dict(), str(weights))
    second = ModelSpec.parse(f"tiny-b:{weights}", config)

    message = app.use_model(second, "cpu")
    assert "keep using" in message
    status = app.status()
    assert status.switching_to == second.spec and status.switching_done == 0
    assert status.model_key == first.key

    cancel = CancelToken()
    for p in app.index(None, "cpu", cancel, batch_size=8):
        if p.phase == "embed":
            cancel.cancel()
    assert app.current_spec().key == first.key
    assert len(app.search_text("a hat", k=30)) == 30  # old vectors still answer
    assert app.status().switching_done == 2  # the first, small batch

    _index(app, None)
    status = app.status()
    assert status.model_key == second.key and status.switching_to is None
    assert status.indexed == 30
    with app.library.session() as s:
        per_model = dict(
            s.execute(
                select(db.Embedding.model_id, func.count()).group_by(db.Embedding.model_id)
            ).all()
        )
    assert sorted(per_model.values()) == [30, 30]  # every vector carries its model id


def test_idle_models_are_unloaded_and_load_again_on_demand(
    app: Clipdesk, photos: Path, tiny_spec: ModelSpec
) -> None:
    app.add_folders([photos])
    _index(app, tiny_spec)
    key = tiny_spec.key
    assert app.loaded_models() == [key]
    assert app.unload_models(idle_for=3600) == []  # just used: stays
    assert app.unload_models(idle_for=0) == [key]
    assert app.loaded_models() == []
    assert len(app.search_text("a hat", k=3)) == 3  # loads it again
    assert app.loaded_models() == [key]


def _measuring_encoder(
    app: Clipdesk, spec: ModelSpec, choices: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[ClipEncoder, list[int]]:
    """A fresh encoder whose first index measures one candidate (the reference itself), and
    the sizes of the batches the pipeline gives it."""
    from clipdesk.backends.choice import BACKEND_ENV
    from clipdesk.backends.runtimes import ImageBackend

    monkeypatch.delenv(BACKEND_ENV, raising=False)
    encoder = ClipEncoder(spec, "cpu", choices_dir=choices)
    reference = encoder.image_backend

    def same() -> ImageBackend:
        return reference

    same.backend_name = reference.name  # type: ignore[attr-defined]
    monkeypatch.setattr(encoder, "_backend_candidates", lambda _built: [same])
    app.preload(encoder)
    piped: list[int] = []
    encode_batch = encoder.encode_batch

    def counted(batch: np.ndarray) -> np.ndarray:
        piped.append(len(batch))
        return encode_batch(batch)

    monkeypatch.setattr(encoder, "encode_batch", counted)
    return encoder, piped


def test_a_first_index_keeps_the_backend_measurements_reference_vectors(
    app: Clipdesk,
    photos: Path,
    tiny_spec: ModelSpec,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The measurement's fp32 pass over the probe photos is stored, not thrown away: the
    pipeline embeds only the rest, and every photo ends with the vector fp32 gives it."""
    from clipdesk.imaging import load_rgb

    encoder, piped = _measuring_encoder(app, tiny_spec, tmp_path / "choices", monkeypatch)
    app.add_folders([photos])
    progress = _index(app, encoder.spec, batch_size=8)
    assert encoder.backend_choice is not None and encoder.backend_choice.measurements
    embeds = [p for p in progress if p.phase == "embed"]
    # 30 photos, a probe of all of them (it takes up to PROBE_PHOTOS): nothing left to pipe
    assert sum(piped) == 0
    assert embeds[-1].done == embeds[-1].total == 30
    status = app.status()
    assert (status.indexed, status.pending, status.failed) == (30, 0, [])
    paths, stored = stored_vectors(app)
    fresh = encoder.image_backend.encode(
        np.stack([encoder.preprocess_image(load_rgb(p, encoder.decode_side)) for p in paths])
    )
    fresh /= np.linalg.norm(fresh, axis=1, keepdims=True)
    assert float(np.min(np.sum(stored * fresh, axis=1))) > 0.9999
    assert app.search_text("a hat", k=3)


def test_a_probe_of_some_photos_leaves_the_rest_to_the_pipeline(
    app: Clipdesk,
    photos: Path,
    tiny_spec: ModelSpec,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from clipdesk.indexing import probe

    monkeypatch.setattr(probe, "PROBE_PHOTOS", 24)  # 30 photos, a step of 1: the first 24
    encoder, piped = _measuring_encoder(app, tiny_spec, tmp_path / "choices", monkeypatch)
    app.add_folders([photos])
    progress = _index(app, encoder.spec, batch_size=8)
    embeds = [p for p in progress if p.phase == "embed"]
    assert sum(piped) == 6
    # the progress counts the probe's 24 as done (its rate: tests/unit/test_progress.py)
    assert [(p.done, p.total) for p in embeds] == [(26, 30), (30, 30)]
    assert app.status().indexed == 30
