"""Issue 21: fidelity judged on what a user can see. A backend may reorder photos whose fp32
scores are tied within its own numerical noise, never pass a photo fp32 scores clearly
better; min cosine stays >= 0.999; choices judged under the older rule are measured again."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from clipdesk.backends import measuring
from clipdesk.backends.choice import (
    BACKEND_ENV,
    CHOICES_FILE,
    BackendChoice,
    ChoiceStore,
    decide,
    measure_again,
)
from clipdesk.backends.measuring import (
    FAITHFUL_AGREEMENT,
    FAITHFUL_COSINE,
    FIDELITY_RULE,
    Measurement,
    judge,
    watched,
)
from clipdesk.backends.runtimes import ImageBackend, TorchBackend
from clipdesk.imaging import load_rgb
from clipdesk.models.encoder import ClipEncoder
from clipdesk.spec import ModelSpec
from tests.helpers import FIXTURES, random_photos


@pytest.fixture(scope="module")
def clothing() -> tuple[ClipEncoder, np.ndarray, np.ndarray]:
    """The trained test model, 93 of its held-out photos (preprocessed) and their fp32
    features."""
    spec = ModelSpec.parse(
        f"clothing-clip:{FIXTURES / 'clothing-clip.safetensors'}", FIXTURES / "clothing-clip.json"
    )
    encoder = ClipEncoder(spec, "cpu")
    paths = sorted((FIXTURES / "clothing-test").rglob("*.jpg"))[::4]
    batch = np.stack(
        [encoder.preprocess_image(load_rgb(str(p), encoder.decode_side)) for p in paths]
    )
    return encoder, batch, encoder.image_backend.encode(batch)


def _noisy(features: np.ndarray, relative: float, seed: int = 0) -> np.ndarray:
    """``features`` plus isotropic noise of ``relative`` times each row's norm."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(0, relative / np.sqrt(features.shape[1]), features.shape)
    scaled = noise * np.linalg.norm(features, axis=1, keepdims=True)
    out: np.ndarray = features + scaled.astype(np.float32)
    return out


class _Noisy(ImageBackend):
    """The reference plus noise that depends only on the photo (its pixels seed it), so a
    photo gets the same vector in the fidelity pass and in any timing pass."""

    def __init__(self, inner: ImageBackend, relative: float, name: str = "noisy") -> None:
        self.inner, self.relative = inner, relative
        self.name, self.description = name, f"fp32 + {relative:g} noise"

    def encode(self, batch: Any) -> np.ndarray:
        out = self.inner.encode(batch)
        rows = []
        for row, photo in zip(out, np.asarray(batch), strict=True):
            seed = int.from_bytes(hashlib.sha1(photo.tobytes()).digest()[:4], "little")
            rows.append(_noisy(row[None], self.relative, seed)[0])
        return np.asarray(rows, dtype=np.float32)


def test_noise_that_only_reorders_ties_is_faithful_where_rule_1_rejected_it(
    clothing: tuple[ClipEncoder, np.ndarray, np.ndarray],
) -> None:
    encoder, batch, _ = clothing
    measured = measuring.measure(
        encoder.image_backend, [lambda: _Noisy(encoder.image_backend, 0.03)], batch, 0.05
    )
    noisy = measured[1]
    assert noisy.min_cosine >= FAITHFUL_COSINE
    # it does reorder neighbours: rule 1 (95 % identical top-10 sets) rejected it
    assert noisy.top10_agreement < FAITHFUL_AGREEMENT
    assert noisy.reordered_gap is not None and noisy.tie_band is not None
    assert 0 < noisy.reordered_gap <= noisy.tie_band
    assert noisy.recall_at_10 is not None and noisy.recall_at_10 < 1
    assert noisy.faithful and noisy.images_per_s > 0  # faithful: timed, so a candidate
    choice = decide("cpu", [measured[0], noisy])
    assert choice.rule == FIDELITY_RULE
    # what `status` shows of the pick says how far it reorders
    fast = Measurement("noisy", "fp32 + noise", 10 * measured[0].images_per_s, 0.9995, True)
    fast.reordered_gap, fast.tie_band = noisy.reordered_gap, noisy.tie_band
    reason = decide("cpu", [measured[0], fast]).reason
    assert "reorders only ties" in reason and f"{noisy.reordered_gap:.1e}" in reason


def test_a_photo_moved_past_a_clearly_better_one_is_unfaithful_though_its_cosine_passes(
    clothing: tuple[ClipEncoder, np.ndarray, np.ndarray],
) -> None:
    _, _, expected = clothing
    unit = expected / np.linalg.norm(expected, axis=1, keepdims=True)
    got = _noisy(unit, 1e-4)  # a faithful backend's noise everywhere...
    aside = np.random.default_rng(1).normal(size=unit.shape[1])
    aside -= (aside @ unit[5]) * unit[5]
    got[5] = unit[5] + 0.04 * aside / np.linalg.norm(aside)  # ...and one photo moved
    fidelity = judge(expected, got)
    assert fidelity.min_cosine >= FAITHFUL_COSINE  # the cosine alone would pass it
    # it passes photos fp32 scores better by far more than the noise's tie band
    assert fidelity.reordered_gap > 10 * fidelity.tie_band
    assert not fidelity.faithful
    # the same noise without the moved photo: faithful
    assert judge(expected, _noisy(unit, 1e-4)).faithful


def test_a_backend_under_cosine_0999_is_unfaithful_even_if_it_reorders_only_ties(
    clothing: tuple[ClipEncoder, np.ndarray, np.ndarray],
) -> None:
    encoder, batch, _ = clothing
    measured = measuring.measure(
        encoder.image_backend, [lambda: _Noisy(encoder.image_backend, 0.06)], batch, 0.05
    )
    noisy = measured[1]
    assert noisy.min_cosine < FAITHFUL_COSINE
    assert noisy.reordered_gap is not None and noisy.tie_band is not None
    assert noisy.reordered_gap <= noisy.tie_band  # its rankings alone would pass
    assert not noisy.faithful and noisy.images_per_s == 0.0
    assert decide("cpu", measured).name == encoder.image_backend.name


def test_an_exact_backend_reorders_nothing() -> None:
    features = np.random.default_rng(2).normal(size=(40, 16)).astype(np.float32)
    fidelity = judge(features, features.copy())
    assert fidelity.reordered_gap == 0.0 and fidelity.recall_at_10 == 1.0
    assert fidelity.faithful and fidelity.tie_band == float(np.finfo(np.float32).eps)


def _one_candidate(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every encoder measures one candidate (a second fp32 tower under another name);
    returns the list the measurements are counted in."""
    monkeypatch.delenv(BACKEND_ENV, raising=False)

    def candidates(self: ClipEncoder, built: dict[str, Any] | None = None) -> list[Any]:
        def make() -> ImageBackend:
            backend = TorchBackend(self.model, self.device, "fp32")
            backend.name = "openvino-fp32"
            if built is not None:
                built[backend.name] = backend
            return backend

        make.backend_name = "openvino-fp32"  # type: ignore[attr-defined]
        return [make]

    monkeypatch.setattr(ClipEncoder, "_backend_candidates", candidates)
    counted: list[int] = []
    real_measure = measuring.measure

    def measure(reference: Any, candidates: Any, batch: Any, *_: Any, **kw: Any) -> Any:
        counted.append(1)
        return real_measure(reference, candidates, batch, 0.2, **kw)

    monkeypatch.setattr(measuring, "measure", measure)
    return counted


def test_a_choice_judged_under_the_old_rule_is_measured_again_at_the_next_index(
    photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from clipdesk.cli.main import main
    from tests.helpers import TINY_CONFIG, TINY_SPEC

    models = tmp_path / "models"
    monkeypatch.setenv("CLIPDESK_MODELS_DIR", str(models))
    counted = _one_candidate(monkeypatch)
    lib = ["--library", str(tmp_path / "library")]
    assert main([*lib, "add", str(photos)]) == 0
    assert main([*lib, "index", "--model", TINY_SPEC, "--model-config", str(TINY_CONFIG)]) == 0
    assert len(counted) == 1
    data = json.loads((models / CHOICES_FILE).read_text())
    (entry,) = data["choices"].values()
    assert entry["rule"] == FIDELITY_RULE
    assert entry["measurements"][1]["reordered_gap"] == 0.0  # the same tower: no reorder
    entry.update(provisional=False, tries=0)  # whatever the load was: only the rule differs

    # remembered under the current rule: kept
    (models / CHOICES_FILE).write_text(json.dumps(data))
    random_photos(photos / "more", 2, seed=1)
    assert main([*lib, "index"]) == 0
    assert len(counted) == 1

    # remembered under rule 1 (written before there was a rule): measured again, and
    # remembered under the current rule
    del entry["rule"]
    for m in entry["measurements"]:
        for field in ("tie_band", "reordered_gap", "recall_at_10"):
            del m[field]
    (models / CHOICES_FILE).write_text(json.dumps(data))
    random_photos(photos / "more", 2, seed=2)
    assert main([*lib, "index"]) == 0
    assert len(counted) == 2
    (entry,) = json.loads((models / CHOICES_FILE).read_text())["choices"].values()
    assert entry["rule"] == FIDELITY_RULE
    assert entry["measurements"][1]["reordered_gap"] == 0.0


def test_an_old_rule_choice_serves_outside_an_index_and_is_measured_again_in_one(
    tmp_path: Path,
) -> None:
    store = ChoiceStore(tmp_path)
    measured = Measurement("torch-fp32", "fp32 via torch", 9.0, 1.0, True)
    store.put("m", "cpu", BackendChoice("torch-fp32", "cpu: fp32", [measured]))
    data = json.loads(store.path.read_text())
    data["choices"]["m || cpu"]["rule"] = FIDELITY_RULE - 1
    store.path.write_text(json.dumps(data))
    old = store.get("m", "cpu")
    assert old is not None and old.rule == FIDELITY_RULE - 1
    assert measure_again(old)  # an encoder holding it measures again at the next index
    with watched(None):  # in an index
        assert store.get("m", "cpu") is None
    # a choice fixed by setting was never judged: nothing to measure again
    assert not measure_again(BackendChoice("torch-bf16", "cpu: by setting", [], rule=1))
