"""What a model is: its spec (``ARCH:PRETRAINED``), its key, and its architecture's config.

How a model runs is elsewhere (:mod:`clipdesk.models.encoder` on torch,
:mod:`clipdesk.models.exported` without it); this module is what every other one may import:
it needs only the standard library.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

from clipdesk.errors import ModelUnavailableError

DEFAULT_MODEL = "ViT-B-32:laion2b_s34b_b79k"
RANDOM_TAG = "random"
RANDOM_SEED = 0
WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")


def model_key(arch: str, config_json: str | None, weights: str) -> str:
    """A model's key, the one definition of it: the architecture (a custom one with the
    start of its config's sha256) and the weights (an open_clip tag, ``random-seed0``, or
    :func:`file_weights`). Vectors are stored under it: a library, an imported model and
    an export of the same weights must compute the same key, or their vectors stop
    matching."""
    if config_json is not None:
        arch += "#" + hashlib.sha256(config_json.encode()).hexdigest()[:12]
    return f"{arch}:{weights}"


def file_weights(sha256_hex: str) -> str:
    """How a key names weights read from a file: by the start of the file's sha256."""
    return "file-" + sha256_hex[:16]


@dataclass(frozen=True)
class ModelSpec:
    """``ARCH:PRETRAINED`` where PRETRAINED is an open_clip tag, a weights file or ``random``.

    ``config_json`` carries a custom architecture (open_clip's model-config schema), so a
    library can load the same model again without the original file. ``known_key`` is the
    key when it is already known (stored in a library, or a verified catalog download),
    which spares hashing a large weights file again.
    """

    arch: str
    pretrained: str
    config_json: str | None = None
    known_key: str | None = None

    @classmethod
    def parse(cls, spec: str, config_file: str | Path | None = None) -> ModelSpec:
        arch, sep, pretrained = spec.partition(":")
        if not sep or not arch or not pretrained:
            raise ModelUnavailableError(
                f"model spec {spec!r} is not ARCH:PRETRAINED (for example {DEFAULT_MODEL}, "
                "ViT-B-32:/path/to/weights.safetensors or ViT-B-32:random)"
            )
        config_json = None
        if config_file is not None:
            try:
                config = json.loads(Path(config_file).read_text(encoding="utf-8"))
            except RecursionError:
                raise ModelUnavailableError(
                    f"the model config {config_file} is not usable: it nests too deeply"
                ) from None
            except (OSError, ValueError) as exc:
                raise ModelUnavailableError(
                    f"cannot read model config {config_file}: {exc}"
                ) from exc
            validate_model_config(config, str(config_file))  # before it is ever stored
            config_json = json.dumps(config, sort_keys=True)
        if pretrained != RANDOM_TAG and _looks_like_file(pretrained):
            pretrained = os.path.abspath(os.path.expanduser(pretrained))
        return cls(arch, pretrained, config_json)

    @property
    def is_random(self) -> bool:
        return self.pretrained == RANDOM_TAG

    @property
    def weights_file(self) -> Path | None:
        return Path(self.pretrained) if _looks_like_file(self.pretrained) else None

    @property
    def spec(self) -> str:
        return f"{self.arch}:{self.pretrained}"

    @functools.cached_property
    def key(self) -> str:
        """A stable id of the weights: vectors from different keys are never mixed."""
        if self.known_key is not None:
            return self.known_key
        if self.is_random:
            weights = f"random-seed{RANDOM_SEED}"
        elif (path := self.weights_file) is not None:
            weights = file_weights(_file_sha256(path))
        else:
            weights = self.pretrained
        return model_key(self.arch, self.config_json, weights)


def _looks_like_file(pretrained: str) -> bool:
    return pretrained.lower().endswith(WEIGHT_SUFFIXES) or os.sep in pretrained


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    except FileNotFoundError as exc:
        raise ModelUnavailableError(f"weights file not found: {path}") from exc
    except OSError as exc:
        raise ModelUnavailableError(
            f"cannot read weights file {path}: {exc.strerror or exc}"
        ) from exc
    return digest.hexdigest()


# -- custom architectures ------------------------------------------------------------------

# open_clip's model-config schema (CLIPVisionCfg, CLIPTextCfg): the keys whose values are
# checked here, by kind. Keys not named are left to open_clip, whose errors become messages.
_POSITIVE_INTS = {
    "": ("embed_dim",),
    "vision_cfg": ("width", "head_width", "patch_size", "attn_pooler_queries", "attn_pooler_heads"),
    "text_cfg": ("context_length", "vocab_size", "width", "heads", "layers"),
}
_POSITIVE_NUMBERS = {"vision_cfg": ("mlp_ratio",), "text_cfg": ("mlp_ratio",)}
_FRACTIONS = {"vision_cfg": ("patch_dropout", "timm_drop")}
_BOOLS = {
    "": ("quick_gelu", "custom_text", "nonscalar_logit_scale"),
    "vision_cfg": ("attentional_pool", "no_ln_pre", "final_ln_after_pool", "output_tokens"),
    "text_cfg": ("embed_cls", "no_causal_mask", "final_ln_after_pool", "output_tokens"),
}
_STRINGS = {
    "vision_cfg": ("pos_embed_type", "pool_type", "timm_model_name", "timm_pool", "timm_proj"),
    "text_cfg": ("pool_type", "proj_type", "hf_model_name", "hf_tokenizer_name"),
}
# open_clip's own configs nest three levels (model, tower, keyword arguments of a layer).
MAX_CONFIG_DEPTH = 6


def _depth(value: object, limit: int) -> int:
    """How deeply ``value`` nests (stops counting past ``limit``: no recursion limit)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            if level <= limit:
                stack.extend(
                    (v, level + 1) for v in (item.values() if isinstance(item, dict) else item)
                )
    return deepest


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def validate_model_config(config: object, source: str) -> None:
    """Refuse an open_clip model config that cannot make a working model (wrong types,
    sizes that are not positive, patches larger than the image, too deep, or more weights
    than this machine's memory holds), with a message that names the key."""

    def bad(problem: str) -> ModelUnavailableError:
        return ModelUnavailableError(f"the model config {source} is not usable: {problem}")

    if not isinstance(config, dict):
        raise bad("it is not a JSON object (open_clip's model-config schema)")
    if _depth(config, MAX_CONFIG_DEPTH) > MAX_CONFIG_DEPTH:
        raise bad(f"it nests deeper than {MAX_CONFIG_DEPTH} levels; open_clip's nest 3")
    for key in ("embed_dim", "vision_cfg", "text_cfg"):
        if key not in config:
            raise bad(f"it has no {key} (it needs embed_dim, vision_cfg and text_cfg)")
    sections = {"": config}
    for name in ("vision_cfg", "text_cfg"):
        if not isinstance(config[name], dict):
            raise bad(f"{name} is not an object")
        sections[name] = config[name]

    def where(section: str, key: str) -> str:
        return f"{section}.{key}" if section else key

    for section, keys in _POSITIVE_INTS.items():
        for key in keys:
            value = sections[section].get(key)
            if (value is not None or key == "embed_dim") and not (_is_int(value) and value > 0):
                raise bad(f"{where(section, key)} is {value!r}, not a whole number above 0")
    for section, keys in _POSITIVE_NUMBERS.items():
        for key in keys:
            value = sections[section].get(key)
            if value is not None and not (_is_number(value) and value > 0):
                raise bad(f"{where(section, key)} is {value!r}, not a number above 0")
    for section, keys in _FRACTIONS.items():
        for key in keys:
            value = sections[section].get(key)
            if value is not None and not (_is_number(value) and 0 <= value < 1):
                raise bad(f"{where(section, key)} is {value!r}, not a number from 0 to below 1")
    for section, keys in _BOOLS.items():
        for key in keys:
            if sections[section].get(key) is not None and not isinstance(
                sections[section][key], bool
            ):
                raise bad(f"{where(section, key)} is {sections[section][key]!r}, not true or false")
    for section, keys in _STRINGS.items():
        for key in keys:
            value = sections[section].get(key)
            if value is not None and not isinstance(value, str):
                raise bad(f"{where(section, key)} is {value!r}, not a string")
    vision = sections["vision_cfg"]
    sizes = vision.get("image_size", 224)
    sizes = sizes if isinstance(sizes, list) and len(sizes) == 2 else [sizes]
    if not all(_is_int(v) and v > 0 for v in sizes):
        raise bad(
            f"vision_cfg.image_size is {vision.get('image_size')!r}, not a whole number above 0 "
            "(or two of them)"
        )
    layers = vision.get("layers", 12)
    if not (_is_int(layers) and layers > 0) and not (
        isinstance(layers, list) and len(layers) == 4 and all(_is_int(v) and v > 0 for v in layers)
    ):
        raise bad(f"vision_cfg.layers is {layers!r}, not a whole number above 0 (or four)")
    patch = vision.get("patch_size") or 16
    if not vision.get("timm_model_name") and not isinstance(layers, list) and patch > min(sizes):
        raise bad(f"vision_cfg.patch_size {patch} is larger than the image ({min(sizes)})")
    need = _weights_bytes(config)
    memory = _physical_memory()
    if memory is not None and need > memory:
        raise bad(
            f"its weights alone would take about {need / 1e6:.0f} MB, more than this machine's "
            f"{memory / 1e6:.0f} MB of memory"
        )


def _weights_bytes(config: dict[str, Any]) -> int:
    """About how many bytes the config's fp32 weights take (transformer towers; towers
    built elsewhere, timm's or Hugging Face's, count as nothing). Checked values only."""
    total = 0.0
    vision, text = config["vision_cfg"], config["text_cfg"]
    if not vision.get("timm_model_name") and _is_int(vision.get("layers", 12)):
        width = vision.get("width") or 768
        sizes = vision.get("image_size", 224)
        side = max(sizes) if isinstance(sizes, list) else sizes
        patch = vision.get("patch_size") or 16
        ratio = vision.get("mlp_ratio") or 4.0
        total += vision.get("layers", 12) * (4 + 2 * ratio) * width**2
        total += ((side // patch) ** 2 + 1) * width + 3 * patch**2 * width
    if not text.get("hf_model_name"):
        width = text.get("width") or 512
        ratio = text.get("mlp_ratio") or 4.0
        total += (text.get("layers") or 12) * (4 + 2 * ratio) * width**2
        total += ((text.get("vocab_size") or 49408) + (text.get("context_length") or 77)) * width
    return int(4 * total)


def _physical_memory() -> int | None:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return None  # not POSIX: no bound from memory
