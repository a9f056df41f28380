"""The runtimes that run a CLIP image tower: torch (fp32, bf16 on the CPU, fp16 on a GPU) and
OpenVINO (the tower exported to ONNX, compiled for the CPU).

A backend takes a preprocessed float32 batch (N, 3, H, W) and returns unnormalised features;
:func:`unit_rows` makes them the vectors clipdesk stores. Which backend runs is chosen in
:mod:`clipdesk.backends.choice`."""

from __future__ import annotations

import copy
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from clipdesk.backends.hardware import cpu_has_avx512
from clipdesk.errors import ClipdeskError

if TYPE_CHECKING:
    import openvino
    import torch

WIDEN_F16_ENV = "CLIPDESK_WIDEN_F16"  # "0"/"1": keep or widen an export's fp16 weights
# What ``index --backend`` and the override setting accept ("auto": measure and choose).
BACKEND_NAMES = (
    "auto",
    "torch-fp32",
    "torch-bf16",
    "torch-fp16",
    "openvino-fp32",
    "openvino-bf16",
    "openvino-fp32-streams",
    "openvino-bf16-streams",
)


class BackendUnavailable(ClipdeskError):
    """This backend cannot run here (a missing package, an unsupported device)."""


class ImageBackend:
    name = "base"
    description = ""
    takes_tensors = False  # numpy batches only

    def encode(self, batch: np.ndarray | torch.Tensor) -> np.ndarray:
        raise NotImplementedError


class ClipModel(Protocol):
    """What a torch backend reads of an open_clip model: its image tower."""

    @property
    def visual(self) -> torch.nn.Module: ...


class TorchBackend(ImageBackend):
    """open_clip's visual tower in torch, in fp32, bf16 (CPU) or fp16 (CUDA/MPS)."""

    def __init__(self, model: ClipModel, device: str, precision: str) -> None:
        import torch  # heavy: only when a torch backend is built

        # imports torch and open_clip: only where torch runs
        from clipdesk.backends.towers import class_token_tower

        self.device = device
        self.precision = precision
        self.name = f"torch-{precision}"
        self.description = f"{precision} via torch"
        self.dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[
            precision
        ]
        visual = model.visual
        if next(visual.parameters()).dtype != self.dtype:
            # A private copy in this precision: the model's own tower stays for the reference
            # and text. (fp32 from a CUDA model that was loaded in fp16 gets an fp32 copy.)
            visual = copy.deepcopy(visual).to(self.dtype)
        self.visual = class_token_tower(visual.eval())

    takes_tensors = True  # a torch tensor may come in, already on the device

    def encode(self, batch: np.ndarray | torch.Tensor) -> np.ndarray:
        import torch  # heavy: loaded already, since this backend was built

        with torch.inference_mode():
            tensor = torch.as_tensor(batch)
            if self.device == "cuda" and not tensor.is_cuda:
                # Page-locked memory: the copy to the GPU runs by DMA, asynchronously.
                tensor = tensor.pin_memory()
            tensor = tensor.to(self.device, self.dtype, non_blocking=True)
            features = self.visual(tensor).float()
        return np.ascontiguousarray(features.cpu().numpy(), dtype=np.float32)


def widens_f16_weights() -> bool:
    """Whether an f32 OpenVINO model's fp16 weights (an export's) are widened to f32 before
    compiling. Without AVX-512, OpenVINO's CPU plugin converts them at every product: 20 %
    slower on an AVX2 Zen 3 (bench/README.md) for 360 MB less memory. With AVX-512 (Zen 4)
    the two ran level, so the weights stay as they are. $CLIPDESK_WIDEN_F16=0/1 overrides."""
    setting = os.environ.get(WIDEN_F16_ENV)
    if setting in ("0", "1"):
        return setting == "1"
    return not cpu_has_avx512()


def widen_f16_weights(model: openvino.Model) -> int:
    """Replace ``model``'s fp16 weight constants (each read through a Convert to f32) by f32
    constants, in place; the values are the same (every fp16 number is exact in f32).
    Returns how many were widened."""
    import openvino as ov  # heavy: only when an OpenVINO backend is built
    import openvino.opset13 as ops

    widened = 0
    for node in model.get_ops():
        if node.get_type_name() != "Convert" or node.get_output_element_type(0) != ov.Type.f32:
            continue
        source = node.input_value(0).get_node()
        if source.get_type_name() == "Constant" and source.get_element_type() == ov.Type.f16:
            wide = ops.constant(source.get_data().astype(np.float32))
            node.output(0).replace(wide.output(0))
            widened += 1
    return widened


class OpenVinoBackend(ImageBackend):
    """The image tower exported to ONNX and compiled by OpenVINO for the CPU.

    ``streams``: OpenVINO's throughput mode: each batch is split over parallel infer
    requests, one stream of cores each, instead of all cores on one request. On 2 cores it
    measured within noise of one request (bench/README.md), so it is not a candidate of the
    automatic choice; ``--backend openvino-fp32-streams`` and bench_backends.py use it."""

    def __init__(
        self, onnx_file: Path, precision: str, threads: int | None = None, streams: bool = False
    ) -> None:
        try:
            import openvino as ov  # heavy, and optional: only when this backend is built
        except ImportError as exc:
            raise BackendUnavailable("OpenVINO is not installed") from exc
        core = ov.Core()
        capabilities = core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        if precision == "bf16" and "BF16" not in capabilities:
            raise BackendUnavailable("this CPU has no native bf16 for OpenVINO")
        config: dict[str, str | int] = {
            "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
            # LATENCY puts every core on one request. THROUGHPUT splits the cores into
            # streams, which only parallel requests fill: with one synchronous request it
            # halved the speed on 2 cores (bench/README.md), so streams mean split batches.
            "PERFORMANCE_HINT": "THROUGHPUT" if streams else "LATENCY",
        }
        if threads is not None:
            config["INFERENCE_NUM_THREADS"] = threads
        model = core.read_model(str(onnx_file))
        # an export's fp16 weights, where that is faster (see widens_f16_weights)
        widen = precision == "fp32" and widens_f16_weights()
        self.widened = widen_f16_weights(model) if widen else 0
        self.compiled = core.compile_model(model, "CPU", config)
        count = int(self.compiled.get_property("NUM_STREAMS")) if streams else 1
        self.requests = [self.compiled.create_infer_request() for _ in range(max(count, 1))]
        self._lock = threading.Lock()
        self.precision = precision
        version = ov.get_version().split("-")[0]
        self.name = f"openvino-{precision}" + ("-streams" if streams else "")
        self.description = f"{precision} via OpenVINO {version}" + (
            f", {len(self.requests)} streams" if streams else ""
        )

    def encode(self, batch: np.ndarray | torch.Tensor) -> np.ndarray:
        array = np.ascontiguousarray(np.asarray(batch, dtype=np.float32))
        parts = np.array_split(array, min(len(self.requests), len(array)) or 1)
        with self._lock:  # the requests are this backend's: calls from two threads take turns
            if len(parts) == 1:
                out = next(iter(self.requests[0].infer({0: array}).values()))
                return np.array(out, dtype=np.float32)
            for request, part in zip(self.requests, parts, strict=False):
                request.start_async({0: np.ascontiguousarray(part)})
            for request in self.requests[: len(parts)]:
                request.wait()
            outputs = [r.get_output_tensor(0).data for r in self.requests[: len(parts)]]
            return np.concatenate(outputs, dtype=np.float32)  # a copy: requests reuse them


def openvino_backend(name: str, model_file: Path, threads: int | None = None) -> OpenVinoBackend:
    """The OpenVINO backend a name says: ``openvino-fp32``, ``openvino-bf16-streams``..."""
    precision, _, mode = name.removeprefix("openvino-").partition("-")
    if precision not in ("fp32", "bf16") or mode not in ("", "streams"):
        raise BackendUnavailable(f"no OpenVINO backend is called {name!r}")
    return OpenVinoBackend(model_file, precision, threads=threads, streams=mode == "streams")


def unit_rows(features: np.ndarray) -> np.ndarray:
    """L2-normalised float32 rows: the vectors clipdesk stores and compares."""
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    unit: np.ndarray = (features / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)
    return unit
