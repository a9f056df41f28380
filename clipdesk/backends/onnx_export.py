"""Write a torch module to ONNX: the one place clipdesk calls torch's exporter.

The image tower the backends are measured on (:mod:`clipdesk.backends.runtimes`, OpenVINO) and the
towers an export ships (:mod:`clipdesk.models.export`) are traced here alike. Needs torch, which is
imported inside the functions: importing this module is cheap.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def visual_onnx_name(model_key: str) -> str:
    """The file name of a model's image tower exported for OpenVINO, in the exports folder.
    ``clipdesk models export`` starts from it when it is there, and removes it when done.
    v2: the class-token tower (towers.py)."""
    return hashlib.sha256(model_key.encode()).hexdigest()[:16] + "-visual-v2.onnx"


def write_onnx(
    module: torch.nn.Module,
    example: torch.Tensor,
    input_name: str,
    target: Path,
    dynamic: tuple[int, ...] = (0,),
) -> None:
    """Trace ``module`` on ``example`` into the ONNX file ``target``, written atomically.
    ``dynamic``: the input's axes left free (the batch, and for text the length)."""
    import torch  # heavy: only when something is exported

    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".onnx.part")
    os.close(fd)
    axes = {0: "batch", 1: "length"}
    try:
        # Traced with autograd on: under no_grad, nn.MultiheadAttention takes a fused fast
        # path (aten::_native_multi_head_attention) that ONNX cannot express.
        with torch.inference_mode(False), torch.enable_grad(), warnings.catch_warnings():
            # The TorchScript exporter: 10-20x faster than dynamo here, and exact. Its
            # deprecation notice and the harmless "negative indices" notes are not ours.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                (example,),
                tmp,
                dynamo=False,
                input_names=[input_name],
                output_names=["features"],
                dynamic_axes={
                    input_name: {axis: axes.get(axis, f"axis{axis}") for axis in dynamic},
                    "features": {0: "batch"},
                },
                opset_version=17,
            )
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)


def export_visual_onnx(model: torch.nn.Module, image_size: int, target: Path) -> Path:
    """Export the image tower to ONNX (fp32, dynamic batch), unless ``target`` exists."""
    import torch  # heavy: only when something is exported

    from clipdesk.backends.towers import class_token_tower  # imports torch and open_clip

    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_file():
        return target
    visual = model.visual
    assert isinstance(visual, torch.nn.Module)
    # its forward is encode_image without the normalisation
    tower = class_token_tower(visual.eval())
    write_onnx(tower, torch.zeros(2, 3, image_size, image_size), "image", target)
    stale = target.with_name(target.name.replace("-visual-v2.onnx", "-visual-v1.onnx"))
    if stale != target:
        stale.unlink(missing_ok=True)  # the plain tower, as earlier versions exported it
    return target
