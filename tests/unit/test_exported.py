"""Exported models (both towers as OpenVINO IR, run without torch): faithful to open_clip on
the project's trained model and on random weights, checked on disk, and used by searches."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from clipdesk.errors import ModelUnavailableError
from clipdesk.imaging import load_rgb
from clipdesk.models import export_files, exported
from clipdesk.models.encoder import ClipEncoder
from clipdesk.models.export import export_model
from clipdesk.spec import ModelSpec
from tests.helpers import (
    CLOTHING_CONFIG,
    CLOTHING_SPEC,
    TINY_CONFIG,
    TINY_SPEC,
    fixture_photo_paths,
)


@pytest.fixture(scope="module")
def clothing() -> ClipEncoder:
    return ClipEncoder(ModelSpec.parse(CLOTHING_SPEC, CLOTHING_CONFIG), "cpu")


def _min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.min(np.sum(a * b, axis=1)))


def test_preprocessing_is_open_clips_bit_for_bit(clothing: ClipEncoder) -> None:
    manifest_like = exported.PilPreprocess(
        clothing.image_size,
        clothing._mean.ravel().tolist(),
        clothing._std.ravel().tolist(),
    )
    images = [Image.open(p).convert("RGB") for p in fixture_photo_paths()[:4]]
    images += [
        Image.new("RGB", size, (250, 3, 7)).rotate(10, expand=False)
        for size in ((900, 300), (300, 900), (40, 50), (65, 64), (64, 64), (1, 500))
    ]
    for image in images:
        ours = manifest_like(image)
        want = clothing.preprocess_image(image)
        assert ours.shape == want.shape and np.array_equal(ours, want), image.size


def test_export_of_the_trained_model_is_faithful(
    clothing: ClipEncoder, clothing_export: Path
) -> None:
    manifest = export_files.verify_export(clothing_export)
    assert manifest.key == clothing.spec.key  # its vectors may share the index
    assert manifest.weights == {"visual": "fp16", "text": "fp16"}  # half the size, faithful
    assert manifest.fidelity["visual_min_cosine"] >= 0.999
    encoder = exported.ExportedEncoder(clothing_export)
    images = [load_rgb(str(p), clothing.decode_side) for p in fixture_photo_paths()]
    assert _min_cosine(encoder.encode_images(images), clothing.encode_images(images)) >= 0.999
    texts = ["a photo of a dress", "shoes", "a blurry photo of a hat.", "ünïcödé & <b>tags</b>"]
    assert _min_cosine(encoder.encode_texts(texts), clothing.encode_texts(texts)) >= 0.999
    assert encoder.dim == clothing.dim and encoder.logit_scale == pytest.approx(
        clothing.logit_scale
    )
    visual_bytes = (clothing_export / "visual.bin").stat().st_size
    params = sum(p.numel() for p in clothing.model.visual.parameters())
    assert visual_bytes < 0.6 * 4 * params  # stored in fp16


def test_fp16_weights_are_widened_where_that_is_faster_with_the_same_vectors(
    clothing_export: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from clipdesk.backends.hardware import cpu_has_avx512, cpu_has_native_bf16
    from clipdesk.backends.measuring import cosines, probe_images
    from clipdesk.backends.runtimes import (
        WIDEN_F16_ENV,
        openvino_backend,
        widen_f16_weights,
        widens_f16_weights,
    )

    visual = clothing_export / "visual.xml"
    size = export_files.ExportManifest.read(clothing_export).image_size
    batch = probe_images(size, count=8)
    monkeypatch.setenv(WIDEN_F16_ENV, "0")
    kept = openvino_backend("openvino-fp32", visual)
    monkeypatch.setenv(WIDEN_F16_ENV, "1")
    widened = openvino_backend("openvino-fp32", visual)
    assert kept.widened == 0 and widened.widened > 10  # every weight matrix and bias
    assert float(np.min(cosines(kept.encode(batch), widened.encode(batch)))) > 0.99999
    if cpu_has_native_bf16():  # bf16 compute: the weights are narrowed anyway
        assert openvino_backend("openvino-bf16", visual).widened == 0
    monkeypatch.delenv(WIDEN_F16_ENV)
    assert widens_f16_weights() is not cpu_has_avx512()
    import openvino as ov

    model = ov.Core().read_model(str(visual))
    assert widen_f16_weights(model) == widened.widened
    left = [
        op
        for op in model.get_ops()
        if op.get_type_name() == "Constant" and op.get_element_type() == ov.Type.f16
    ]
    assert left == []  # no fp16 weight is read at every product any more


def test_export_of_random_weights_is_faithful(tmp_path: Path) -> None:
    tiny = ClipEncoder(ModelSpec.parse(TINY_SPEC, TINY_CONFIG), "cpu")
    folder = export_model(tiny, tmp_path)
    encoder = exported.ExportedEncoder(folder)
    images = [load_rgb(str(p), tiny.decode_side) for p in fixture_photo_paths()[:12]]
    assert _min_cosine(encoder.encode_images(images), tiny.encode_images(images)) >= 0.999
    texts = ["a dog", "a cat on a sofa"]
    assert _min_cosine(encoder.encode_texts(texts), tiny.encode_texts(texts)) >= 0.999


def test_exported_text_towers_take_trimmed_texts_and_fixed_length_ones_still_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import openvino as ov
    import torch

    tiny = ClipEncoder(ModelSpec.parse(TINY_SPEC, TINY_CONFIG), "cpu")
    texts = ["dog", "a dog on a beach at sunset", "", " ".join(["receipts"] * 40)]
    with torch.inference_mode():  # open_clip's own, all positions
        want = tiny.model.encode_text(tiny.tokenizer(texts), normalize=True).numpy()

    def text_input(folder: Path) -> Any:
        return ov.Core().read_model(str(folder / "text.xml")).input(0).get_partial_shape()

    folder = export_model(tiny, tmp_path / "short")
    assert text_input(folder)[1].is_dynamic  # a causal tower: any length
    encoder = exported.ExportedEncoder(folder)
    assert _min_cosine(encoder.encode_texts(texts), want) >= 0.9999
    assert encoder._text_trims
    assert _min_cosine(encoder.encode_texts(texts[:1]), want[:1]) >= 0.9999  # 3 positions

    # what earlier versions exported, and what non-causal towers get: the whole context
    from clipdesk.backends import towers

    monkeypatch.setattr(towers, "short_text_tower", lambda model: None)
    folder = export_model(tiny, tmp_path / "whole")
    assert text_input(folder)[1].get_length() == tiny.tokenizer.context_length
    encoder = exported.ExportedEncoder(folder)
    assert _min_cosine(encoder.encode_texts(texts), want) >= 0.9999
    assert not encoder._text_trims

    # `models export --again` replaces such an export; without it, it is kept
    monkeypatch.undo()
    assert export_model(tiny, tmp_path / "whole") == folder
    assert not text_input(folder)[1].is_dynamic
    assert export_model(tiny, tmp_path / "whole", replace=True) == folder
    assert text_input(folder)[1].is_dynamic
    assert [p.name for p in (tmp_path / "whole").iterdir()] == [folder.name]  # nothing left over
    export_files.verify_export(folder)
    assert _min_cosine(exported.ExportedEncoder(folder).encode_texts(texts), want) >= 0.9999


def test_the_export_reuses_the_tower_measured_for_the_backends_unless_it_is_stale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from clipdesk.backends import onnx_export

    tiny = ClipEncoder(ModelSpec.parse(TINY_SPEC, TINY_CONFIG), "cpu")
    measured = tmp_path / onnx_export.visual_onnx_name(tiny.spec.key)
    onnx_export.export_visual_onnx(tiny.model, tiny.image_size, measured)
    traced: list[str] = []
    real_export = onnx_export.write_onnx

    def counting(module: Any, example: Any, input_name: str, *args: Any) -> None:
        traced.append(input_name)
        real_export(module, example, input_name, *args)

    monkeypatch.setattr(onnx_export, "write_onnx", counting)
    folder = export_model(tiny, tmp_path / "fresh")
    assert traced == ["image", "tokens"]  # another folder: nothing to reuse
    traced.clear()
    shutil.rmtree(folder)
    folder = export_model(tiny, tmp_path)
    assert traced == ["tokens"]  # the image tower came from the measurement
    assert export_files.verify_export(folder).fidelity["visual_min_cosine"] >= 0.999
    assert not measured.exists()  # the export holds it now: no second copy on disk

    # a stale tower (other weights under that name) is judged unfaithful and replaced
    import torch

    other = ClipEncoder(ModelSpec.parse(TINY_SPEC, TINY_CONFIG), "cpu")
    with torch.no_grad():
        for parameter in other.model.visual.parameters():
            parameter.mul_(-1.0)
    shutil.rmtree(folder)
    # the plain tower an earlier version measured, under the name it used: replaced
    stale = measured.with_name(measured.name.replace("-visual-v2.onnx", "-visual-v1.onnx"))
    stale.write_bytes(b"an earlier version's tower")
    onnx_export.export_visual_onnx(other.model, other.image_size, measured)
    assert measured.is_file() and not stale.exists()
    traced.clear()
    folder = export_model(tiny, tmp_path)
    assert traced == ["tokens", "image"]  # reused, judged unfaithful, exported afresh
    assert not measured.exists()
    encoder = exported.ExportedEncoder(folder)
    images = [load_rgb(str(p), tiny.decode_side) for p in fixture_photo_paths()[:8]]
    assert _min_cosine(encoder.encode_images(images), tiny.encode_images(images)) >= 0.999


def test_damaged_or_unfinished_exports_are_refused(clothing_export: Path, tmp_path: Path) -> None:
    models = tmp_path / "models"
    installed = export_files.install_export(clothing_export, models)
    key = export_files.ExportManifest.read(installed).key
    assert export_files.find_export(key, models) == installed
    damaged = tmp_path / "damaged"
    shutil.copytree(clothing_export, damaged)
    blob = bytearray((damaged / "visual.bin").read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    (damaged / "visual.bin").write_bytes(bytes(blob))
    with pytest.raises(ModelUnavailableError, match="damaged"):
        export_files.install_export(damaged, tmp_path / "other-models")
    # A folder without its manifest (an interrupted export or copy) is not offered.
    unfinished = models / export_files.EXPORTS_SUBDIR / "unfinished"
    shutil.copytree(clothing_export, unfinished)
    (unfinished / export_files.MANIFEST_NAME).unlink()
    assert [f for f, _ in export_files.available_exports(models)] == [installed]


def test_the_compiled_text_tower_is_kept_in_the_export_between_processes(
    clothing_export: Path, tmp_path: Path
) -> None:
    folder = export_files.install_export(clothing_export, tmp_path / "models")
    texts = ["a photo of a dress", "a red hat", "shoes"]
    first = exported.ExportedEncoder(folder).encode_texts(texts)
    cache = folder / export_files.COMPILED_CACHE_SUBDIR
    blobs = sorted(cache.iterdir())
    assert blobs, "the first compile left nothing for the next process"
    again = exported.ExportedEncoder(folder).encode_texts(texts)  # a new compile: from it
    np.testing.assert_array_equal(again, first)
    assert sorted(cache.iterdir()) == blobs  # read, not written again
    export_files.verify_export(folder)  # no part of the export's checked files
    for blob in blobs:  # a damaged entry: OpenVINO compiles afresh
        blob.chmod(0o644)
        blob.write_bytes(b"not a compiled model")
    np.testing.assert_allclose(
        exported.ExportedEncoder(folder).encode_texts(texts), first, rtol=1e-5, atol=1e-6
    )
    shutil.rmtree(cache)
    folder.chmod(0o555)  # a read-only export (a bundle's): no cache, the same vectors
    try:
        got = exported.ExportedEncoder(folder).encode_texts(texts)
        if os.geteuid() != 0:  # root writes anywhere
            assert not cache.exists()
    finally:
        folder.chmod(0o755)
    np.testing.assert_allclose(got, first, rtol=1e-5, atol=1e-6)


def test_searches_use_the_export_and_find_the_same_photos(
    clothing: ClipEncoder,
    clothing_export: Path,
    photos: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from clipdesk.library import Library
    from clipdesk.services import Clipdesk

    monkeypatch.setenv("CLIPDESK_MODELS_DIR", str(tmp_path / "models"))
    library = Library(tmp_path / "library")
    full = Clipdesk(library)
    full.preload(clothing)
    full.add_folders([photos])
    list(full.index(clothing.spec))
    queries = ["a photo of shoes", "a red dress", "pants", "a hat"]
    want = [[h.path for h in full.search_text(q, k=10)] for q in queries]

    export_files.install_export(clothing_export)
    fresh = Clipdesk(library)  # a new process, as a cold `clipdesk search` is
    assert isinstance(fresh.query_encoder(), exported.ExportedEncoder)
    got = [[h.path for h in fresh.search_text(q, k=10)] for q in queries]
    assert got == want
    # A loaded full model is used as it is (no second copy of the text tower).
    fresh.preload(clothing)
    assert fresh.query_encoder() is clothing
    library.close()


def test_without_torch_the_export_is_the_model(
    clothing_export: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from clipdesk.services import Clipdesk

    monkeypatch.setenv(export_files.NO_TORCH_ENV, "1")
    monkeypatch.setenv(export_files.BUNDLED_MODELS_ENV, str(clothing_export.parent))
    monkeypatch.setenv("CLIPDESK_MODELS_DIR", str(tmp_path / "models"))
    from clipdesk.library import Library

    library = Library(tmp_path / "library")
    app = Clipdesk(library)
    spec = app.default_spec()  # no default model exported: the bundled one
    assert spec.key == export_files.ExportManifest.read(clothing_export).key
    assert isinstance(app.encoder(), exported.ExportedEncoder)
    with pytest.raises(ModelUnavailableError, match="not available in exported form"):
        app.encoder(ModelSpec.parse("ViT-B-32:random"))
    library.close()


def test_an_export_whose_weights_are_gone_is_the_model(
    clothing_export: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bundle or a copied models folder brings the export but not the weights file the
    model was made from: the export runs it, even where torch is installed."""
    from clipdesk.library import Library
    from clipdesk.services import Clipdesk

    monkeypatch.setenv("CLIPDESK_MODELS_DIR", str(tmp_path / "models"))
    manifest = export_files.ExportManifest.read(export_files.install_export(clothing_export))
    gone = ModelSpec(
        manifest.arch, str(tmp_path / "elsewhere" / "clothing-clip.safetensors"),
        manifest.config_json, known_key=manifest.key,
    )  # fmt: skip
    library = Library(tmp_path / "library")
    assert isinstance(Clipdesk(library).encoder(gone), exported.ExportedEncoder)
    library.close()


@pytest.fixture()
def exporting_app(
    tiny_encoder: ClipEncoder, photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Any]:
    """A library with the photos added, the tiny model loaded, and exporting after the
    first full index switched on (the test suite switches it off elsewhere)."""
    from clipdesk.library import Library
    from clipdesk.services import Clipdesk

    monkeypatch.setenv("CLIPDESK_AUTO_EXPORT", "1")
    monkeypatch.setenv("CLIPDESK_MODELS_DIR", str(tmp_path / "models"))
    library = Library(tmp_path / "library")
    app = Clipdesk(library)
    app.preload(tiny_encoder)
    app.add_folders([photos])
    yield app
    library.close()


def test_the_first_full_index_exports_the_model_once(
    exporting_app: Any, tiny_encoder: ClipEncoder, tmp_path: Path
) -> None:
    from clipdesk.services import Clipdesk

    app = exporting_app
    phases = [(p.phase, p.message) for p in app.index(tiny_encoder.spec)]
    assert ("export", "searches from the command line now start without torch") in phases
    folder = export_files.find_export(tiny_encoder.spec.key)
    assert folder is not None and folder.parent == tmp_path / "models" / "exports"
    fresh = Clipdesk(app.library)
    assert isinstance(fresh.query_encoder(), exported.ExportedEncoder)
    assert fresh.search_text("a photo of shoes", k=3)
    # Once: the next index run does not export again.
    assert "export" not in [p.phase for p in app.index()]


def test_cancelling_during_the_export_stops_it_at_once(
    exporting_app: Any, tiny_encoder: ClipEncoder, tmp_path: Path
) -> None:
    import time

    from clipdesk.progress import CancelToken, JobWarning

    app = exporting_app
    cancel = CancelToken()
    messages = []
    started = None
    for progress in app.index(tiny_encoder.spec, cancel=cancel):
        if progress.phase == "export" and progress.done == 0:
            cancel.cancel()  # as closing the window does
            started = time.monotonic()
        messages.append(progress.message)
    assert started is not None and time.monotonic() - started < 5
    assert messages[-1] == "the model was not exported: the export was cancelled"
    assert progress.warning is JobWarning.EXPORT_FAILED  # what the window recognises
    exports = tmp_path / "models" / "exports"
    assert export_files.find_export(tiny_encoder.spec.key) is None
    assert not exports.exists() or not list(exports.glob(".*.part"))  # no half export left


def test_an_export_runs_in_streams_when_asked_and_refuses_torch_backends(
    clothing_export: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from clipdesk.backends.choice import BACKEND_ENV
    from clipdesk.backends.measuring import probe_images

    monkeypatch.delenv(BACKEND_ENV, raising=False)
    encoder = exported.ExportedEncoder(clothing_export, choices_dir=tmp_path)
    probe = probe_images(encoder.image_size, count=5)
    one_request = encoder.image_backend.encode(probe)
    choice = encoder.select_backend("openvino-fp32-streams")
    assert choice.name == encoder.image_backend.name == "openvino-fp32-streams"
    np.testing.assert_allclose(encoder.image_backend.encode(probe), one_request, atol=1e-5)
    with pytest.raises(ModelUnavailableError, match="needs torch"):
        encoder._make_backend("torch-bf16")
