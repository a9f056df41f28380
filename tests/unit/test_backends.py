"""Encoder backends: every faster backend must be faithful to the fp32 reference, on the
project's trained model and on random weights, and give the same search results."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from clipdesk.backends import hardware, measuring
from clipdesk.backends.choice import BACKEND_ENV, CHOICES_FILE, decide
from clipdesk.backends.measuring import (
    FAITHFUL_AGREEMENT,
    FAITHFUL_COSINE,
    TIMING_BATCH,
    cosines,
    judge,
    probe_images,
    top10_agreement,
)
from clipdesk.backends.runtimes import (
    BackendUnavailable,
    ImageBackend,
    TorchBackend,
    openvino_backend,
)
from clipdesk.errors import ModelUnavailableError
from clipdesk.imaging import load_rgb
from clipdesk.models.encoder import ClipEncoder
from clipdesk.spec import ModelSpec
from tests.helpers import FIXTURES

CLOTHING_TEST = FIXTURES / "clothing-test"


def _available_backends() -> list[str]:
    names = []
    if hardware.cpu_has_native_bf16():
        names.append("torch-bf16")
    try:
        import openvino as ov

        names += ["openvino-fp32", "openvino-fp32-streams"]
        if "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
            names += ["openvino-bf16", "openvino-bf16-streams"]
    except ImportError:
        pass
    return names


BACKENDS = _available_backends()


@pytest.fixture(scope="module")
def clothing_encoder() -> ClipEncoder:
    spec = ModelSpec.parse(
        f"clothing-clip:{FIXTURES / 'clothing-clip.safetensors'}", FIXTURES / "clothing-clip.json"
    )
    return ClipEncoder(spec, "cpu")


@pytest.fixture(scope="module")
def clothing_batch(clothing_encoder: ClipEncoder) -> tuple[list[Path], np.ndarray]:
    """All 372 held-out photos, preprocessed as the pipeline does."""
    paths = sorted(CLOTHING_TEST.rglob("*.jpg"))
    tensors = [
        clothing_encoder.preprocess_image(load_rgb(str(p), clothing_encoder.decode_side))
        for p in paths
    ]
    return paths, np.stack(tensors)


def _encode(backend: ImageBackend, batch: np.ndarray, step: int = 64) -> np.ndarray:
    parts = [backend.encode(batch[i : i + step]) for i in range(0, len(batch), step)]
    features = np.concatenate(parts)
    unit: np.ndarray = features / np.linalg.norm(features, axis=1, keepdims=True)
    return unit


@pytest.mark.parametrize("name", BACKENDS)
def test_backend_fidelity_on_the_trained_model_and_real_photos(
    name: str, clothing_encoder: ClipEncoder, clothing_batch: tuple[list[Path], np.ndarray]
) -> None:
    _, batch = clothing_batch
    reference = _encode(clothing_encoder.image_backend, batch)
    backend = clothing_encoder._make_backend(name)
    fast = _encode(backend, batch)
    cosine = float(np.sum(reference * fast, axis=1).min())
    agreement = top10_agreement(reference, fast)
    print(f"{name}: min cosine {cosine:.6f}, same top-10 for {agreement:.1%} of 372 photos")
    # The choice applies exactly the rule (issue 21): cosine >= 0.999, only ties reordered.
    probe = batch[::4]
    measured = measuring.measure(clothing_encoder.image_backend, [lambda: backend], probe, 0.05)
    assert measured[1].faithful == judge(reference[::4], _encode(backend, probe)).faithful
    if "fp32" in name:  # an exact fp32 runtime must match the reference outright
        assert cosine >= 0.99999 and agreement == 1.0 and measured[1].faithful
        assert measured[1].reordered_gap == 0.0
    if cosine >= FAITHFUL_COSINE and agreement >= FAITHFUL_AGREEMENT:
        # Faithful on all 372 photos: text searches rank them the same way too.
        for label in ("dress", "hat", "shoes", "pants"):
            query = clothing_encoder.encode_texts([f"a photo of a {label}"])[0]
            assert list(np.argsort(-(reference @ query))[:10]) == list(
                np.argsort(-(fast @ query))[:10]
            )


@pytest.mark.parametrize("name", BACKENDS)
def test_backend_is_faithful_with_random_weights(name: str, tiny_encoder: Any) -> None:
    batch = probe_images(tiny_encoder.image_size, count=24, seed=3)
    reference = _encode(tiny_encoder.image_backend, batch)
    fast = _encode(tiny_encoder._make_backend(name), batch)
    assert np.sum(reference * fast, axis=1).min() >= FAITHFUL_COSINE


class _Perturbed(ImageBackend):
    """Fast but wrong: what the choice must never take."""

    name, description = "perturbed", "a broken backend"

    def __init__(self, inner: ImageBackend) -> None:
        self.inner = inner

    def encode(self, batch: Any) -> np.ndarray:
        out = self.inner.encode(batch)
        return out + np.random.default_rng(0).normal(0, 0.5, out.shape).astype(np.float32)


def test_the_choice_keeps_only_faithful_backends(tiny_encoder: Any) -> None:
    reference = tiny_encoder.image_backend

    def unavailable() -> ImageBackend:
        raise BackendUnavailable("no such hardware here")

    batch = probe_images(tiny_encoder.image_size, count=8)
    measured = measuring.measure(
        reference, [lambda: _Perturbed(reference), unavailable], batch, seconds=0.05
    )
    assert [m.faithful for m in measured] == [True, False, False]
    assert measured[1].images_per_s == 0.0  # an unfaithful backend is not even timed
    assert "no such hardware" in measured[2].error
    choice = decide("cpu", measured)
    assert choice.name == reference.name  # never the perturbed one, however fast


def test_fp32_from_a_half_precision_model_gets_its_own_fp32_tower(tiny_encoder: Any) -> None:
    """On CUDA the model is loaded in fp16; CLIPDESK_BACKEND=torch-fp32 there must still run
    (it crashed on fp32 input against fp16 weights)."""
    import copy

    half = copy.deepcopy(tiny_encoder.model).half()
    backend = TorchBackend(half, "cpu", "fp32")
    assert next(backend.visual.parameters()).dtype.is_floating_point
    assert str(next(backend.visual.parameters()).dtype) == "torch.float32"
    assert str(next(half.visual.parameters()).dtype) == "torch.float16"  # left as it was
    batch = probe_images(tiny_encoder.image_size, count=4)
    got = backend.encode(batch)
    expected = tiny_encoder.image_backend.encode(batch)
    assert float(np.min(cosines(expected, got))) > 0.999


def test_a_large_probe_is_timed_in_its_own_fidelity_pass(
    tiny_encoder: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference = tiny_encoder.image_backend
    batch = probe_images(tiny_encoder.image_size, count=4 * TIMING_BATCH)

    def no_extra_timing(*_args: Any) -> float:
        raise AssertionError("timed apart although the probe was large enough")

    monkeypatch.setattr(measuring, "_speed", no_extra_timing)
    measured = measuring.measure(reference, [lambda: _Copy(reference, "copy")], batch)
    assert [m.faithful for m in measured] == [True, True]
    assert all(m.images_per_s > 0 for m in measured)


class _Copy(ImageBackend):
    """The reference under another name: faithful by construction."""

    def __init__(self, inner: ImageBackend, name: str) -> None:
        self.inner, self.name, self.description = inner, name, name

    def encode(self, batch: Any) -> np.ndarray:
        return self.inner.encode(batch)


def test_a_slower_sibling_is_not_measured_when_the_faster_one_is_faithful(
    tiny_encoder: Any,
) -> None:
    reference = tiny_encoder.image_backend
    batch = probe_images(tiny_encoder.image_size, count=8)
    built: list[str] = []

    def factory(make: Callable[[], ImageBackend], name: str, skip_if: str | None = None) -> Any:
        def build() -> ImageBackend:
            built.append(name)
            return make()

        build.backend_name = name  # type: ignore[attr-defined]
        if skip_if:
            build.skip_if_faithful = skip_if  # type: ignore[attr-defined]
        return build

    faithful_bf16 = factory(lambda: _Copy(reference, "fast-bf16"), "fast-bf16")
    slow_fp32 = factory(lambda: _Copy(reference, "slow-fp32"), "slow-fp32", "fast-bf16")
    measured = measuring.measure(reference, [faithful_bf16, slow_fp32], batch, seconds=0.05)
    assert built == ["fast-bf16"]  # the fp32 sibling was never even built
    assert measured[2].name == "slow-fp32" and not measured[2].faithful
    assert "fast-bf16 is faithful" in measured[2].error

    built.clear()

    def perturbed_bf16() -> ImageBackend:
        broken = _Perturbed(reference)
        broken.name = "fast-bf16"  # the sibling's name: only its fidelity differs
        return broken

    broken_bf16 = factory(perturbed_bf16, "fast-bf16")
    measured = measuring.measure(reference, [broken_bf16, slow_fp32], batch, seconds=0.05)
    assert built == ["fast-bf16", "slow-fp32"]  # bf16 unfaithful: fp32 is measured
    assert measured[1].name == "fast-bf16" and not measured[1].faithful
    assert measured[2].faithful and measured[2].images_per_s > 0


def test_a_measured_choice_is_remembered_per_model_and_machine(
    tiny_spec: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(BACKEND_ENV, raising=False)
    first = ClipEncoder(tiny_spec, "cpu", choices_dir=tmp_path)
    choice = first.select_backend(seconds=0.05)
    assert choice.measurements and choice.measurements[0].name == "torch-fp32"
    assert first.device_reason.startswith("cpu: ")
    assert (tmp_path / CHOICES_FILE).is_file()

    def no_measuring(*_args: Any, **_kwargs: Any) -> None:
        raise AssertionError("measured again")

    monkeypatch.setattr(measuring, "measure", no_measuring)
    second = ClipEncoder(tiny_spec, "cpu", choices_dir=tmp_path)
    assert second.select_backend().name == choice.name
    assert second.image_backend.name == choice.name


class _Slowed(ImageBackend):
    """The reference, made slower: every candidate beats it."""

    def __init__(self, inner: ImageBackend) -> None:
        self.inner, self.name, self.description = inner, inner.name, inner.description

    def encode(self, batch: Any) -> np.ndarray:
        import time

        time.sleep(0.02)
        return self.inner.encode(batch)


def test_the_chosen_backend_is_the_one_measured_not_built_again(
    tiny_spec: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(BACKEND_ENV, raising=False)
    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: True)  # torch-bf16 is a candidate
    encoder = ClipEncoder(tiny_spec, "cpu", choices_dir=tmp_path)
    fast = encoder.image_backend
    encoder.image_backend = _Slowed(fast)
    made: list[ImageBackend] = []

    def make(name: str) -> ImageBackend:
        made.append(_Copy(fast, name))
        return made[-1]

    monkeypatch.setattr(encoder, "_make_backend", make)
    choice = encoder.select_backend(seconds=0.05)
    assert choice.name != "torch-fp32"
    measured = [m.name for m in choice.measurements[1:] if m.faithful]
    assert [b.name for b in made] == measured  # each built once, for its measurement
    assert any(encoder.image_backend is b for b in made)
    assert encoder.image_backend.name == choice.name


def test_an_override_is_used_as_given_and_a_bad_one_is_refused(
    tiny_spec: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(BACKEND_ENV, raising=False)
    forced = ClipEncoder(tiny_spec, "cpu", choices_dir=tmp_path)
    assert forced.select_backend("torch-fp32").name == "torch-fp32"
    assert "chosen by setting" in forced.device_reason
    bad = ClipEncoder(tiny_spec, "cpu", choices_dir=tmp_path)
    with pytest.raises(ModelUnavailableError, match="unknown encoder backend"):
        bad.select_backend("turbo-9000")


needs_openvino = pytest.mark.skipif(
    not any(n.startswith("openvino-") for n in BACKENDS), reason="OpenVINO is not installed"
)


@needs_openvino
def test_streams_split_a_batch_and_put_it_back_in_order(tiny_encoder: Any) -> None:
    one_request = tiny_encoder._make_backend("openvino-fp32")
    streams = tiny_encoder._make_backend("openvino-fp32-streams")
    assert streams.name == "openvino-fp32-streams"
    if (os.cpu_count() or 1) > 1:
        assert len(streams.requests) >= 2  # so the batches below are really split
    batch = probe_images(tiny_encoder.image_size, count=33, seed=5)
    for size in (1, 2, 3, 33):
        expected = one_request.encode(batch[:size])
        got = streams.encode(batch[:size])
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    # outputs are copies: the next call reuses the requests' tensors
    first = streams.encode(batch[:4])
    streams.encode(batch[4:8])
    np.testing.assert_allclose(first, one_request.encode(batch[:4]), rtol=1e-4, atol=1e-5)


def test_a_backend_name_that_is_not_one_is_refused_before_any_export(tiny_encoder: Any) -> None:
    with pytest.raises(ModelUnavailableError, match="unknown encoder backend"):
        tiny_encoder._make_backend("openvino-fp64-turbo")
    with pytest.raises(BackendUnavailable, match="no OpenVINO backend"):
        openvino_backend("openvino-int4", Path("unused.xml"))
