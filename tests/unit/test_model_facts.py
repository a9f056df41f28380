"""Facts written once (issue 18): the model key, the backend choice's lock, the hub check.

No model is loaded: the key is computed from files, the choice on stand-in backends.
"""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from clipdesk.backends.choice import BACKEND_ENV, CHOICES_FILE, BackendChoice, choose
from clipdesk.backends.measuring import BackendFactory
from clipdesk.backends.runtimes import ImageBackend
from clipdesk.models import hub
from clipdesk.models import store as models
from clipdesk.spec import ModelSpec, file_weights, model_key

CONFIG = '{"embed_dim": 8, "text_cfg": {}, "vision_cfg": {}}'


def test_one_key_for_the_same_weights_however_they_arrive(tmp_path: Path) -> None:
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"not really weights, but bytes to hash" * 1000)
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    # a spec naming the file (a library, `index --model ARCH:FILE`) ...
    from_file = ModelSpec("ViT-B-32", str(weights), CONFIG).key
    # ... and what `models import` records for the copy it hashed while copying
    assert from_file == model_key("ViT-B-32", CONFIG, file_weights(digest))
    assert from_file.startswith("ViT-B-32#") and from_file.endswith(":file-" + digest[:16])
    # a catalog download is stored under the key open_clip's own tag has
    assert model_key("ViT-B-32", None, "laion2b_s34b_b79k") == (
        ModelSpec("ViT-B-32", "laion2b_s34b_b79k").key
    )
    assert ModelSpec("ViT-B-32", "random").key == "ViT-B-32:random-seed0"


class _Backend(ImageBackend):
    def __init__(self, name: str, delay: float = 0.0) -> None:
        self.name, self.description, self.delay = name, f"{name} here", delay

    def encode(self, batch: Any) -> np.ndarray:
        time.sleep(self.delay)
        return np.asarray(batch, dtype=np.float32).reshape(len(batch), -1)[:, :16].copy()


class _Encoder:
    """The least an encoder offers :func:`choose`."""

    device = "cpu"
    image_size = 8

    def __init__(self, choices_dir: Path | None) -> None:
        self.spec = ModelSpec("ViT-B-32", "random")
        self.choices_dir = choices_dir
        self.backend_lock = threading.Lock()
        self.backend_choice: BackendChoice | None = None
        self.image_backend: ImageBackend = _Backend("torch-fp32", delay=0.01)
        self.built: list[str] = []

    def machine(self) -> str:
        return "test machine"

    def takes_override(self, name: str) -> bool:
        return name.startswith("torch-")

    def unmeasured_reason(self, reference: ImageBackend) -> str:
        return f"cpu: {reference.description}"

    def _backend_candidates(self, built: dict[str, ImageBackend]) -> list[BackendFactory]:
        def make() -> ImageBackend:
            self.built.append("torch-bf16")
            built["torch-bf16"] = _Backend("torch-bf16")
            return built["torch-bf16"]

        make.backend_name = "torch-bf16"  # type: ignore[attr-defined]
        return [make]

    def adopt(self, name: str, built: ImageBackend | None) -> None:
        if name != self.image_backend.name:
            self.image_backend = built or _Backend(name)


def test_two_callers_at_once_measure_once_and_share_the_choice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The exported encoder measured without a lock: two threads measured twice."""
    monkeypatch.delenv(BACKEND_ENV, raising=False)
    encoder = _Encoder(tmp_path)
    probe = np.random.default_rng(0).normal(size=(4, 3, 8, 8)).astype(np.float32)
    choices: list[BackendChoice] = []

    def pick() -> None:
        choices.append(choose(encoder, seconds=0.05, probe=probe))

    threads = [threading.Thread(target=pick) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert encoder.built == ["torch-bf16"]  # built and measured once
    assert choices[0] is choices[1] is encoder.backend_choice
    assert choices[0].name == "torch-bf16" == encoder.image_backend.name  # the faster one
    assert (tmp_path / CHOICES_FILE).is_file()


def test_an_override_the_encoder_cannot_run_is_measured_instead(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(BACKEND_ENV, raising=False)
    probe = np.random.default_rng(1).normal(size=(4, 3, 8, 8)).astype(np.float32)
    kept = choose(_Encoder(None), "torch-fp32", probe=probe)
    assert kept.name == "torch-fp32" and "chosen by setting" in kept.reason
    measured = choose(_Encoder(None), "openvino-fp32", seconds=0.05, probe=probe)
    assert measured.measurements and measured.name == "torch-bf16"


def test_the_hub_is_not_reachable_in_offline_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    """Once for the store and the encoder: offline mode answers at once, without a try."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)

    def no_connection(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("connected in offline mode")

    monkeypatch.setattr("clipdesk.models.hub.socket.create_connection", no_connection)
    assert hub.hub_reachable() is False
    assert models.ModelStore().reachable() is False
