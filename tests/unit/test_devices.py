"""Device choice and the CUDA path as far as a machine without a GPU can check it."""

from __future__ import annotations

import pytest

from clipdesk.errors import ModelUnavailableError
from clipdesk.models.encoder import ClipEncoder, batch_for_memory, pick_device

torch = pytest.importorskip("torch")
NO_CUDA = not torch.cuda.is_available()


@pytest.mark.skipif(not NO_CUDA, reason="this machine has a CUDA GPU")
def test_asking_for_cuda_without_a_gpu_says_so() -> None:
    with pytest.raises(ModelUnavailableError, match="no CUDA GPU is available"):
        pick_device("cuda")


def test_auto_picks_cuda_then_mps_then_cpu_and_says_why() -> None:
    device, reason = pick_device("auto")
    if torch.cuda.is_available():
        assert device == "cuda" and "fp16" in reason
    elif device == "cpu":
        assert reason.startswith("cpu: no CUDA or MPS available")
    assert pick_device("cpu")[1].startswith("cpu: CPU chosen by setting")
    with pytest.raises(ModelUnavailableError, match="unknown device"):
        pick_device("tpu")


def test_cuda_batches_fill_half_the_free_memory() -> None:
    gib = 1 << 30
    assert batch_for_memory(80 * gib, 20 << 20) == 1024  # an H100: capped
    assert batch_for_memory(4 * gib, 20 << 20) == 96  # a 4 GB laptop GPU
    assert batch_for_memory(256 << 20, 20 << 20) == 32  # nearly full: the floor
    assert batch_for_memory(8 * gib, 0) == 1024


def test_the_cpu_keeps_the_default_batch(tiny_encoder: ClipEncoder) -> None:
    assert tiny_encoder.cuda_batch_size(32) == 32


def test_a_model_from_a_weights_file_raises_no_false_alarm(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """open_clip warns "No pretrained weights loaded ... initialized randomly" before
    clipdesk loads the weights file itself; users took it for a broken model."""
    import logging

    from clipdesk.models.encoder import ClipEncoder
    from clipdesk.spec import ModelSpec
    from tests.helpers import CLOTHING_CONFIG, CLOTHING_SPEC

    with caplog.at_level(logging.WARNING):
        ClipEncoder(ModelSpec.parse(CLOTHING_SPEC, CLOTHING_CONFIG), "cpu")
    assert not [r for r in caplog.records if "No pretrained weights" in r.getMessage()]
    logging.getLogger().warning("No pretrained weights loaded (elsewhere)")  # not muted for good
    assert [r for r in caplog.records if "elsewhere" in r.getMessage()]
