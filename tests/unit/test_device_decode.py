"""Decoding on the encoder's device (nvJPEG on CUDA), run here through the same code with
torchvision's CPU decoder: the pixels, the embeddings and the pipeline around it. What only
a GPU can show (nvJPEG itself, its speed) is in test_cuda.py and bench/bench_gpu.py."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from PIL import Image

from clipdesk.imaging import PlainJpeg, load_rgb, load_rgb_full, read_plain_jpeg
from clipdesk.indexing import device_decode
from clipdesk.indexing.device_decode import DeviceDecoder, resize_plan
from clipdesk.library import Library
from clipdesk.models.encoder import ClipEncoder
from clipdesk.services import Clipdesk
from clipdesk.spec import ModelSpec
from tests.helpers import (
    CLOTHING_CONFIG,
    CLOTHING_SPEC,
    FIXTURES,
    make_bad_files,
    stored_vectors,
    top_k,
)

if TYPE_CHECKING:
    import torch

pytest.importorskip("torchvision")


@pytest.fixture(scope="module")
def clothing() -> ClipEncoder:
    return ClipEncoder(ModelSpec.parse(CLOTHING_SPEC, CLOTHING_CONFIG), "cpu")


def _cpu_path(encoder: ClipEncoder, paths: list[Path]) -> np.ndarray:
    return np.stack(
        [encoder.preprocess_image(load_rgb(str(p), encoder.decode_side)) for p in paths]
    )


def _device_path(encoder: ClipEncoder, paths: list[Path]) -> np.ndarray:
    plan = resize_plan(encoder)
    assert plan is not None
    jpegs = [read_plain_jpeg(str(p)) for p in paths]
    assert all(j is not None for j in jpegs)
    tensors = DeviceDecoder(plan, "cpu").prepare([j for j in jpegs if j is not None])
    return np.concatenate([t.numpy() for t in tensors])


def test_embeddings_and_rankings_match_the_cpu_path(clothing: ClipEncoder) -> None:
    """The issue's bar for a decode variant, on the trained model's 372 held-out photos:
    cosine >= 0.99 to the CPU path (measured: 0.9998), and here also the same top-10
    neighbours for >= 95 % of the photos as queries."""
    paths = sorted((FIXTURES / "clothing-test").rglob("*.jpg"))
    cpu = clothing.encode_batch(_cpu_path(clothing, paths))
    device = clothing.encode_batch(_device_path(clothing, paths))
    assert (cpu * device).sum(axis=1).min() >= 0.999
    same = [
        set(top_k(cpu, cpu[i], 10, exclude=i)) == set(top_k(device, device[i], 10, exclude=i))
        for i in range(len(paths))
    ]
    assert np.mean(same) >= 0.95


def _marked(path: Path, size: tuple[int, int], orientation: int, mode: str = "RGB") -> None:
    image = Image.new("RGB", size, (200, 30, 30))
    image.paste((0, 0, 255), (0, 0, size[0] // 3, size[1] // 4))  # shows which way is up
    exif = Image.Exif()
    exif[0x0112] = orientation
    image.convert(mode).save(path, quality=95, exif=exif.tobytes())


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_as_the_cpu_path(
    tmp_path: Path, clothing: ClipEncoder, orientation: int
) -> None:
    path = tmp_path / f"o{orientation}.jpg"
    _marked(path, (300, 200), orientation)
    cpu, device = _cpu_path(clothing, [path]), _device_path(clothing, [path])
    assert cpu.shape == device.shape
    # a turned-wrong image differs by whole colours (~4 in normalised units)
    assert np.abs(cpu - device).max() < 0.2
    # and against Pillow's own ImageOps.exif_transpose (load_rgb_full), not our mapping
    assert np.abs(clothing.preprocess_image(load_rgb_full(str(path))) - device[0]).max() < 0.2


def test_grey_jpegs_become_three_channels(tmp_path: Path, clothing: ClipEncoder) -> None:
    path = tmp_path / "grey.jpg"
    _marked(path, (120, 160), 1, mode="L")
    cpu, device = _cpu_path(clothing, [path]), _device_path(clothing, [path])
    assert device.shape[1] == 3 and np.abs(cpu - device).max() < 0.2


def test_only_plain_jpegs_go_to_the_device(tmp_path: Path) -> None:
    Image.new("RGB", (40, 30)).save(tmp_path / "a.png")
    Image.new("CMYK", (40, 30)).save(tmp_path / "c.jpg")
    Image.new("RGB", (40, 30)).save(tmp_path / "p.jpg")
    assert read_plain_jpeg(str(tmp_path / "a.png")) is None
    assert read_plain_jpeg(str(tmp_path / "c.jpg")) is None  # Pillow converts CMYK properly
    jpeg = read_plain_jpeg(str(tmp_path / "p.jpg"))
    assert jpeg is not None and (jpeg.width, jpeg.height, jpeg.orientation) == (40, 30, 1)


def test_a_failed_decode_is_reported_per_photo(tmp_path: Path, clothing: ClipEncoder) -> None:
    good = FIXTURES / "photos" / "hat"
    photo = next(good.glob("*.jpg"))
    truncated = tmp_path / "t.jpg"
    truncated.write_bytes(photo.read_bytes()[:2000])
    jpegs = [read_plain_jpeg(str(p)) for p in (photo, truncated, photo)]
    plan = resize_plan(clothing)
    assert plan is not None
    out = DeviceDecoder(plan, "cpu").prepare(jpegs)  # type: ignore[arg-type]
    assert out[1] is None and out[0] is not None and out[2] is not None


def test_cut_off_and_huge_jpegs_go_the_cpu_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """nvJPEG may decode a file cut off in a copy without an error; the CPU way refuses
    it. Huge ones would take GBs on the GPU; the CPU decodes them DCT-scaled."""
    photo = next((FIXTURES / "photos" / "hat").glob("*.jpg"))
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(photo.read_bytes()[:-5000])
    padded = tmp_path / "padded.jpg"
    padded.write_bytes(photo.read_bytes() + b"\x00" * 16)  # some cameras pad after the end
    assert DeviceDecoder.read(str(photo)) is not None
    assert DeviceDecoder.read(str(padded)) is not None
    assert read_plain_jpeg(str(cut)) is not None and DeviceDecoder.read(str(cut)) is None
    monkeypatch.setattr(device_decode, "DEVICE_MAX_PIXELS", 1000)
    assert DeviceDecoder.read(str(photo)) is None


def test_a_failed_resize_on_the_device_is_per_photo(
    monkeypatch: pytest.MonkeyPatch, clothing: ClipEncoder
) -> None:
    plan = resize_plan(clothing)
    assert plan is not None
    decoder = DeviceDecoder(plan, "cpu")
    real = decoder._preprocess
    calls: list[int] = []

    def second_fails(image: torch.Tensor, orientation: int) -> torch.Tensor:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("CUDA out of memory")
        return real(image, orientation)

    monkeypatch.setattr(decoder, "_preprocess", second_fails)
    photos = sorted((FIXTURES / "photos" / "hat").glob("*.jpg"))
    out = decoder.prepare([read_plain_jpeg(str(p)) for p in photos])  # type: ignore[misc]
    assert [t is None for t in out] == [False, True, False]


def test_other_preprocessing_stays_on_the_cpu(clothing: ClipEncoder) -> None:
    import open_clip

    plan = resize_plan(clothing)
    assert plan is not None and plan.size == clothing.image_size
    squash = open_clip.image_transform(64, is_train=False, resize_mode="squash")
    other = type("Other", (), {"_pil_steps": squash.transforms[:-2], "_mean": clothing._mean})
    other._std = clothing._std  # type: ignore[attr-defined]  # a stand-in class, built above
    assert resize_plan(other) is None  # type: ignore[arg-type]  # the stand-in, not an Encoder


def test_when_it_is_used(monkeypatch: pytest.MonkeyPatch, clothing: ClipEncoder) -> None:
    monkeypatch.delenv(device_decode.DEVICE_DECODE_ENV, raising=False)
    assert not device_decode.wanted(clothing)  # a CPU encoder decodes on the CPU
    monkeypatch.setattr(clothing, "device", "cuda")
    assert device_decode.wanted(clothing)  # on CUDA, by default
    monkeypatch.setenv(device_decode.DEVICE_DECODE_ENV, "0")
    assert not device_decode.wanted(clothing)  # the setting turns it off
    monkeypatch.setattr(clothing, "device", "cpu")
    monkeypatch.setenv(device_decode.DEVICE_DECODE_ENV, "1")
    assert device_decode.wanted(clothing)  # forced, for these tests


def test_the_pipeline_with_device_decoding(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    app: Clipdesk,
    photos: Path,
    tiny_spec: ModelSpec,
) -> None:
    """Index the same folder both ways: the vectors agree, PNGs and CMYK JPEGs take the
    CPU path, and broken files are recorded with the CPU path's reasons."""
    Image.open(next(photos.rglob("*.jpg"))).convert("RGB").save(photos / "as.png")
    Image.open(next(photos.rglob("*.jpg"))).convert("CMYK").save(photos / "cmyk.jpg")
    expected = make_bad_files(photos / "bad", next(photos.rglob("*.jpg")))
    app.add_folders([photos])
    list(app.index(tiny_spec, "cpu"))
    cpu_paths, cpu_vectors = stored_vectors(app)
    cpu_failed = dict(app.status().failed)

    monkeypatch.setenv(device_decode.DEVICE_DECODE_ENV, "1")
    prepared: list[int] = []
    real_prepare = DeviceDecoder.prepare

    def counting(self: DeviceDecoder, jpegs: Sequence[PlainJpeg]) -> list[torch.Tensor | None]:
        out = real_prepare(self, jpegs)
        prepared.extend(1 for tensor in out if tensor is not None)
        return out

    monkeypatch.setattr(DeviceDecoder, "prepare", counting)
    again = Clipdesk(Library(tmp_path / "library-device"))
    again.preload(app.encoder(tiny_spec))
    again.add_folders([photos])
    list(again.index(tiny_spec, "cpu", batch_size=8))
    paths, vectors = stored_vectors(again)
    failed = dict(again.status().failed)
    again.library.close()
    assert paths == cpu_paths and len(paths) == 32
    # the 30 photos went to the device; the PNG and the CMYK JPEG took the CPU path, and
    # the broken JPEGs failed there and then on the CPU, which words why
    assert len(prepared) == 30
    assert (cpu_vectors * vectors).sum(axis=1).min() >= 0.999
    assert set(failed) == set(cpu_failed) and len(failed) == len(expected)
    for path, reason in failed.items():
        assert expected[Path(path).name] in reason


def test_a_device_failure_on_a_whole_batch_falls_back_to_the_cpu(
    monkeypatch: pytest.MonkeyPatch, app: Clipdesk, photos: Path, tiny_spec: ModelSpec
) -> None:
    """Batches as long as DEVICE_BATCH_CAP; a batch the device cannot take at all (out of
    memory, say) is decoded on the CPU, and its broken files are counted once."""
    from clipdesk.indexing import embedding

    expected = make_bad_files(photos / "bad", next(photos.rglob("*.jpg")))
    monkeypatch.setenv(device_decode.DEVICE_DECODE_ENV, "1")
    monkeypatch.setattr(embedding, "DEVICE_BATCH_CAP", 8)

    def out_of_memory(self: DeviceDecoder, jpegs: object) -> list[object]:
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(DeviceDecoder, "prepare", out_of_memory)
    app.add_folders([photos])
    progress = [p for p in app.index(tiny_spec, "cpu") if p.phase == "embed"]
    steps = np.diff([0] + [p.done for p in progress])
    assert steps.max() <= 8 + len(expected)  # a batch, plus failures that came between
    # the cut-off and the scrambled JPEG fail here, once each; the other bad files at the scan
    assert progress[-1].done == 32 and progress[-1].failed == 2
    status = app.status()
    assert status.indexed == 30 and len(status.failed) == len(expected)
