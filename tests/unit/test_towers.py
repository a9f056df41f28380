"""The image tower with its last block for the class token only, and the text tower that
reads texts trimmed after the longest, give open_clip's own features, share its weights
and leave the model's towers as they were."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from clipdesk.backends import onnx_export
from clipdesk.backends.measuring import probe_images
from clipdesk.backends.runtimes import TorchBackend, openvino_backend
from clipdesk.models.encoder import ClipEncoder
from clipdesk.spec import ModelSpec
from tests.helpers import FIXTURES

torch = pytest.importorskip("torch")
open_clip = pytest.importorskip("open_clip")

from clipdesk.backends.towers import ClassTokenBlock, class_token_tower, short_text_tower  # noqa: E402
from clipdesk.models.tokenizer import trim_tokens  # noqa: E402


def _features(tower: Any, batch: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        features: np.ndarray = tower(torch.from_numpy(batch)).float().numpy()
    return features


def _vit(**vision: Any) -> Any:
    cfg = {"image_size": 64, "layers": 3, "width": 64, "head_width": 32, "patch_size": 16}
    return open_clip.model._build_vision_tower(32, open_clip.model.CLIPVisionCfg(**cfg, **vision))


def _assert_same_features(plain: Any, lean: Any, image_size: int) -> None:
    batch = probe_images(image_size, count=6, seed=5)
    want, got = _features(plain, batch), _features(lean, batch)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())


@pytest.mark.parametrize("arch", ["ViT-B-32", "ViT-B-16"])
def test_real_architectures_give_the_plain_towers_features(arch: str) -> None:
    torch.manual_seed(0)
    visual = open_clip.create_model(arch, pretrained=None).visual.eval()
    lean: Any = class_token_tower(visual)  # torch types submodules as Tensor | Module
    assert isinstance(lean.transformer.resblocks[-1], ClassTokenBlock)
    _assert_same_features(visual, lean, visual.image_size[0])


def test_the_models_own_tower_is_left_as_it_was_and_weights_are_shared() -> None:
    visual = _vit().eval()
    last = visual.transformer.resblocks[-1]
    lean: Any = class_token_tower(visual)
    assert visual.transformer.resblocks[-1] is last  # the reference and text still use it
    assert lean.transformer.resblocks[-1].block is last
    assert {id(p) for p in lean.parameters()} == {id(p) for p in visual.parameters()}
    assert not any(isinstance(m, ClassTokenBlock) for m in visual.modules())


def test_the_tokens_first_layout_of_older_open_clip_versions() -> None:
    visual = _vit().eval()
    batch = probe_images(64, count=4, seed=1)
    want = _features(visual, batch)
    # open_clip before 2.24-ish ran its transformer as (tokens, batch, width)
    visual.transformer.batch_first = False
    for block in visual.transformer.resblocks:
        block.attn.batch_first = False
    lean = class_token_tower(visual)
    np.testing.assert_allclose(_features(visual, batch), want, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(_features(lean, batch), want, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    "vision", [{"pool_type": "avg"}, {"output_tokens": True}, {"attentional_pool": True}]
)
def test_towers_that_read_more_than_the_class_token_are_left_alone(vision: dict[str, Any]) -> None:
    visual = _vit(**vision)
    assert class_token_tower(visual) is visual


def test_a_resnet_tower_is_left_alone() -> None:
    spec = ModelSpec.parse(
        f"clothing-clip:{FIXTURES / 'clothing-clip.safetensors'}", FIXTURES / "clothing-clip.json"
    )
    visual = ClipEncoder(spec, "cpu").model.visual
    assert class_token_tower(visual) is visual


def test_the_torch_backend_and_the_export_run_the_class_token_tower(
    tiny_encoder: Any, tmp_path: Path
) -> None:
    plain = tiny_encoder.model.visual
    batch = probe_images(tiny_encoder.image_size, count=8, seed=2)
    want = _features(plain, batch)
    for precision in ("fp32", "bf16"):
        backend: Any = TorchBackend(tiny_encoder.model, "cpu", precision)
        assert isinstance(backend.visual.transformer.resblocks[-1], ClassTokenBlock)
    np.testing.assert_allclose(
        TorchBackend(tiny_encoder.model, "cpu", "fp32").encode(batch),
        want,
        rtol=1e-4,
        atol=1e-6,
    )
    onnx = pytest.importorskip("onnx")
    size = tiny_encoder.image_size
    target = onnx_export.export_visual_onnx(tiny_encoder.model, size, tmp_path / "visual.onnx")
    weights = [init.name for init in onnx.load(str(target)).graph.initializer]
    last = len(plain.transformer.resblocks) - 1
    assert any(name.startswith(f"transformer.resblocks.{last}.block.") for name in weights)
    if importlib.util.find_spec("openvino"):
        got = openvino_backend("openvino-fp32", target).encode(batch)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


# Texts of many lengths: one word, a sentence, an empty one, and one longer than any
# context (cut, its last kept token replaced by the end token).
TEXTS = ["dog", "a dog on a beach at sunset", "", " ".join(["receipts"] * 90), "a cat."]


def _plain_text_features(model: Any, tokens: Any) -> np.ndarray:
    with torch.inference_mode():
        features: np.ndarray = model.encode_text(tokens).float().numpy()
    return features


@pytest.mark.parametrize("arch", ["ViT-B-32", "ViT-B-16"])
def test_texts_trimmed_after_the_longest_give_the_plain_text_features(arch: str) -> None:
    torch.manual_seed(0)
    model = open_clip.create_model(arch, pretrained=None).eval()
    tokenizer = open_clip.get_tokenizer(arch)
    short = short_text_tower(model)
    assert short is not None
    for texts in (TEXTS[:2], TEXTS[4:], TEXTS):
        tokens = tokenizer(texts)
        trimmed = trim_tokens(tokens)
        if len(texts) < len(TEXTS):
            assert trimmed.shape[1] < tokens.shape[1] // 4
        want = _plain_text_features(model, tokens)
        with torch.inference_mode():
            got = short(trimmed).numpy()
            whole = short(tokens).numpy()  # untrimmed input: the same tower, all positions
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())
        np.testing.assert_allclose(whole, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())


def test_the_short_text_tower_shares_the_models_text_weights_only() -> None:
    model = open_clip.create_model("ViT-B-32", pretrained=None)
    short = short_text_tower(model)
    assert short is not None
    visual = {id(p) for p in model.visual.parameters()}
    text = {id(p) for p in model.parameters()} - visual
    assert {id(p) for p in short.parameters()} == text - {id(model.logit_scale)}
    assert short.blocks is model.transformer.resblocks


@pytest.mark.parametrize(
    "text_cfg",
    [
        {"no_causal_mask": True},  # MobileCLIP's text tower: every position sees the padding
        {"pool_type": "last"},
        {"embed_cls": True},  # CoCa: a class token appended after the padding
    ],
)
def test_text_towers_where_padding_matters_are_left_alone(text_cfg: dict[str, Any]) -> None:
    cfg = {"context_length": 16, "width": 32, "heads": 2, "layers": 1}
    text = open_clip.model._build_text_tower(32, open_clip.model.CLIPTextCfg(**cfg, **text_cfg))
    assert short_text_tower(text) is None


def test_a_changed_causal_mask_is_not_taken_for_one() -> None:
    model = open_clip.create_model("ViT-B-32", pretrained=None)
    assert short_text_tower(model) is not None
    model.attn_mask = model.attn_mask.clone()
    model.attn_mask[5, 3] = float("-inf")  # one more hidden position: not CLIP's mask
    assert short_text_tower(model) is None
    model.attn_mask = torch.zeros(77, 77)  # bidirectional
    assert short_text_tower(model) is None


def test_the_torch_encoder_encodes_texts_through_the_short_tower(tiny_encoder: Any) -> None:
    assert tiny_encoder._short_text is not None
    tokens = tiny_encoder.tokenizer(TEXTS)
    want = _plain_text_features(tiny_encoder.model, tokens)
    want /= np.linalg.norm(want, axis=1, keepdims=True)
    np.testing.assert_allclose(tiny_encoder.encode_texts(TEXTS), want, rtol=1e-4, atol=1e-6)
    one = tiny_encoder.encode_texts(["dog"])  # its own, shorter batch
    np.testing.assert_allclose(one[0], want[0], rtol=1e-4, atol=1e-6)
