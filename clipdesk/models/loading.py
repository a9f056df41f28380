"""Building open_clip models from local weights: a custom architecture's config made known
to open_clip, a catalog tag's settings applied to its downloaded file, and the checks an
imported checkpoint passes (plain tensors only, and it fits its architecture).

torch, open_clip and safetensors are imported inside functions: the CPU bundle has none
of them, and importing this module stays cheap.
"""

from __future__ import annotations

import atexit
import pickle
import re
import shutil
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

from clipdesk.errors import ModelUnavailableError
from clipdesk.models.hub import first_line
from clipdesk.spec import ModelSpec

if TYPE_CHECKING:
    from torch import nn


class PretrainedOverrides(TypedDict):
    """What ``open_clip.create_model`` takes to build a tag's model from a local file."""

    force_quick_gelu: bool
    force_preprocess_cfg: dict[str, object]


def pretrained_overrides(arch: str, pretrained: str) -> PretrainedOverrides:
    """What ``open_clip.create_model(arch, pretrained=TAG)`` takes from the tag's config,
    for building the same model from a local file: QuickGELU (OpenAI weights) and the
    image preprocessing (MobileCLIP and SigLIP do not use CLIP's mean and std)."""
    import open_clip  # not in the CPU bundle; seconds to import (torch)

    cfg = open_clip.get_pretrained_cfg(arch, pretrained) or {}
    preprocess = {k: cfg[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in cfg}
    return PretrainedOverrides(
        force_quick_gelu=bool(cfg.get("quick_gelu", False)),
        force_preprocess_cfg=preprocess,
    )


def create_pretrained_model(arch: str, pretrained: str, weights: Path) -> nn.Module:
    """open_clip's model for ``arch:pretrained`` with its weights read from a local file."""
    import open_clip  # not in the CPU bundle; seconds to import (torch)

    try:
        model: nn.Module = open_clip.create_model(
            arch,
            pretrained=str(weights),
            weights_only=True,
            **pretrained_overrides(arch, pretrained),
        )
        return model
    except Exception as exc:
        raise ModelUnavailableError(
            f"cannot load weights {weights} into {arch}: {type(exc).__name__}: {str(exc)[:300]}"
        ) from exc


_config_lock = threading.Lock()
_config_dir: Path | None = None


def register_config(spec: ModelSpec) -> str:
    """Make a custom architecture known to open_clip; returns the name to create it by."""
    import open_clip  # not in the CPU bundle; seconds to import (torch)

    if spec.config_json is None:
        return spec.arch
    name = spec.key.split(":", 1)[0]
    with _config_lock:
        if name not in open_clip.list_models():
            global _config_dir
            if _config_dir is None:
                _config_dir = Path(tempfile.mkdtemp(prefix="clipdesk-configs-"))
                atexit.register(shutil.rmtree, _config_dir, ignore_errors=True)
            # open_clip names a config after its file, so the file carries the unique name.
            path = _config_dir / f"{name}.json"
            path.write_text(spec.config_json, encoding="utf-8")
            open_clip.add_model_config(path)
    return name


def check_plain_weights(path: Path, shown: Path) -> None:
    """Refuse a checkpoint that needs code to load: only tensors, never a pickle's objects."""
    if path.name.lower().endswith(".safetensors"):
        from safetensors import safe_open  # not in the CPU bundle

        try:
            with safe_open(str(path), framework="pt") as fh:
                fh.keys()
        except Exception as exc:
            raise ModelUnavailableError(
                f"{shown} is not a valid safetensors file: {first_line(exc)}"
            ) from exc
        return
    import torch  # not in the CPU bundle; seconds to import

    try:
        torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ModelUnavailableError(
            f"refused: {shown} is a pickle that needs code to load (it refers to "
            f"{_pickle_culprit(exc)}), and loading it could run anything. clipdesk loads only "
            "plain weights: a .safetensors file, or a torch state dict that loads with "
            "weights_only=True"
        ) from exc
    except Exception as exc:
        raise ModelUnavailableError(
            f"{shown} cannot be read as torch weights: {first_line(exc)}"
        ) from exc


def _pickle_culprit(exc: BaseException) -> str:
    match = re.search(r"GLOBAL ([\w.]+)", str(exc)) or re.search(r"global ([\w.]+)", str(exc))
    return match.group(1) if match else "objects that are not tensors"


def check_fits(registered: str, path: Path, shown: Path, arch: str) -> int:
    """Build the architecture and load the weights into it; returns the embedding size."""
    import open_clip  # not in the CPU bundle; seconds to import (torch)

    try:
        model = open_clip.create_model(registered, pretrained=None)
        open_clip.load_checkpoint(model, str(path), weights_only=True)
    except Exception as exc:
        raise ModelUnavailableError(
            f"{shown} does not fit the architecture {arch}: {type(exc).__name__}: {first_line(exc)}"
        ) from exc
    projection = getattr(model, "text_projection", None)
    config = open_clip.get_model_config(registered) or {}
    dim = config.get("embed_dim")
    if dim is None and projection is not None:
        dim = int(projection.shape[-1])
    return int(dim) if dim is not None else 0
