"""The CUDA path on a real NVIDIA GPU: skipped where there is none (CI, these machines);
tools/device_check.sh runs it on a lent GPU machine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from clipdesk.backends.choice import BACKEND_ENV
from clipdesk.backends.measuring import (
    FAITHFUL_AGREEMENT,
    FAITHFUL_COSINE,
    cosines,
    top10_agreement,
)
from clipdesk.backends.runtimes import TorchBackend
from clipdesk.imaging import load_rgb
from clipdesk.models.encoder import ClipEncoder
from clipdesk.spec import ModelSpec
from tests.helpers import CLOTHING_CONFIG, CLOTHING_SPEC, FIXTURES, make_bad_files

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here")


@pytest.fixture(scope="module")
def clothing_spec() -> ModelSpec:
    return ModelSpec.parse(CLOTHING_SPEC, CLOTHING_CONFIG)


@pytest.fixture(scope="module")
def held_out(clothing_spec: ModelSpec) -> np.ndarray:
    """The 372 held-out clothing photos, preprocessed as the pipeline does."""
    cpu = ClipEncoder(clothing_spec, "cpu")
    paths = sorted((FIXTURES / "clothing-test").rglob("*.jpg"))
    return np.stack([cpu.preprocess_image(load_rgb(str(p), cpu.decode_side)) for p in paths])


def test_auto_takes_cuda_in_fp16(clothing_spec: ModelSpec) -> None:
    encoder = ClipEncoder(clothing_spec, "auto")
    assert encoder.device == "cuda" and encoder.precision == "fp16"
    assert "fp16" in encoder.device_reason


def test_fp16_on_the_gpu_is_faithful_to_fp32_on_the_cpu(
    clothing_spec: ModelSpec, held_out: np.ndarray
) -> None:
    cpu = ClipEncoder(clothing_spec, "cpu")
    gpu = ClipEncoder(clothing_spec, "cuda")
    starts = range(0, len(held_out), 64)
    expected = np.concatenate([cpu.encode_batch(held_out[i : i + 64]) for i in starts])
    got = np.concatenate([gpu.encode_batch(held_out[i : i + 64]) for i in starts])
    cosine = np.sum(expected * got, axis=1)
    agreement = top10_agreement(expected, got)
    print(f"fp16 on CUDA: min cosine {cosine.min():.6f}, same top-10 {agreement:.1%}")
    assert cosine.min() >= FAITHFUL_COSINE
    texts = ["a photo of a hat", "a photo of shoes"]
    text_cosine = np.sum(cpu.encode_texts(texts) * gpu.encode_texts(texts), axis=1)
    assert text_cosine.min() >= FAITHFUL_COSINE


def test_the_batch_grows_with_free_memory(clothing_spec: ModelSpec) -> None:
    gpu = ClipEncoder(clothing_spec, "cuda")
    free, _total = torch.cuda.mem_get_info()
    batch = gpu.cuda_batch_size(32)
    if free > 8 << 30:  # a 64 px model on a data-centre GPU: the cap
        assert batch == 1024
    assert batch >= 32
    gpu.encode_batch(np.zeros((batch, 3, gpu.image_size, gpu.image_size), np.float32))


def test_fp32_by_setting_on_the_gpu_runs_in_fp32(
    clothing_spec: ModelSpec, held_out: np.ndarray
) -> None:
    """The model is loaded in fp16 on CUDA; an fp32 override gets its own fp32 tower (it
    crashed on fp32 input against fp16 weights)."""
    cpu = ClipEncoder(clothing_spec, "cpu")
    gpu = ClipEncoder(clothing_spec, "cuda")
    fp32 = TorchBackend(gpu.model, "cuda", "fp32")
    assert next(fp32.visual.parameters()).dtype == torch.float32
    got = fp32.encode(held_out[:64])
    expected = cpu.image_backend.encode(held_out[:64])
    assert float(np.min(cosines(expected, got))) >= FAITHFUL_COSINE


def test_index_and_search_on_the_gpu_find_what_the_cpu_finds(
    clothing_spec: ModelSpec, photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from clipdesk.library import Library
    from clipdesk.services import Clipdesk

    results: dict[str, list[str]] = {}
    for device in ("cpu", "cuda"):
        # the CPU as the fp32 reference; the GPU as a user gets it (auto: fp16)
        monkeypatch.setenv(BACKEND_ENV, "torch-fp32" if device == "cpu" else "auto")
        app: Any = Clipdesk(Library(tmp_path / f"library-{device}"))
        try:
            app.add_folders([photos])
            list(app.index(clothing_spec, device))
            assert app.status().indexed == 30
            results[device] = [Path(h.path).name for h in app.search_text("a photo of a hat", k=10)]
        finally:
            app.library.close()
    assert set(results["cuda"][:3]) == set(results["cpu"][:3])  # fp16 may swap near ties
    assert len(set(results["cuda"]) & set(results["cpu"])) >= 9


def test_nvjpeg_decodes_as_the_cpu_path(clothing_spec: ModelSpec, held_out: np.ndarray) -> None:
    """Decoding and resizing on the GPU (device_decode.py) against the CPU path, on the
    trained model's held-out photos: the bar of a decode variant and of a backend."""
    from clipdesk.imaging import read_plain_jpeg
    from clipdesk.indexing.device_decode import DeviceDecoder, resize_plan

    cpu = ClipEncoder(clothing_spec, "cpu")
    plan = resize_plan(cpu)
    assert plan is not None
    paths = sorted((FIXTURES / "clothing-test").rglob("*.jpg"))
    jpegs = [read_plain_jpeg(str(p)) for p in paths]
    tensors = DeviceDecoder(plan, "cuda").prepare(jpegs)  # type: ignore[arg-type]
    assert all(t is not None and t.is_cuda for t in tensors)
    got = torch.cat(tensors).cpu().numpy()
    print(f"nvJPEG pixels: max difference {np.abs(got - held_out).max() * 0.27 * 255:.1f} levels")
    expected, decoded = cpu.encode_batch(held_out), cpu.encode_batch(got)
    cosine = np.sum(expected * decoded, axis=1)
    agreement = top10_agreement(expected, decoded)
    print(f"nvJPEG: min cosine {cosine.min():.6f}, same top-10 {agreement:.1%}")
    assert cosine.min() >= FAITHFUL_COSINE
    assert agreement >= FAITHFUL_AGREEMENT


def test_the_gpu_pipeline_decodes_on_the_gpu_and_words_bad_files(
    clothing_spec: ModelSpec, photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from clipdesk.indexing.device_decode import DeviceDecoder
    from clipdesk.library import Library
    from clipdesk.services import Clipdesk

    expected = make_bad_files(photos / "bad", next(photos.rglob("*.jpg")))
    decoded: list[int] = []
    real_prepare = DeviceDecoder.prepare

    def counting(self: DeviceDecoder, jpegs: list[Any]) -> list[Any]:
        out = real_prepare(self, jpegs)
        decoded.extend(1 for tensor in out if tensor is not None)
        return out

    monkeypatch.setattr(DeviceDecoder, "prepare", counting)
    app: Any = Clipdesk(Library(tmp_path / "library"))
    try:
        app.add_folders([photos])
        list(app.index(clothing_spec, "cuda"))
        status = app.status()
    finally:
        app.library.close()
    reasons = {Path(path).name: reason for path, reason in status.failed}
    print("bad files on the GPU path:", reasons)
    # Scrambled data behind valid headers: libjpeg warns and clipdesk's CPU path refuses
    # it; nvJPEG may decode it without an error. A known gap, reported, not hidden.
    silently = int("corrupt.jpg" not in reasons)
    print(f"scrambled JPEG decoded without an error by nvJPEG: {bool(silently)}")
    assert status.indexed == 30 + silently
    assert "JPEGs decoded on the GPU (nvJPEG)" in status.device
    assert len(decoded) == 30 + silently  # every good photo by nvJPEG
    assert set(reasons) | {"corrupt.jpg"} == set(expected)
    for name, reason in reasons.items():
        assert expected[name] in reason
