"""A CLIP model in exported form: both towers as OpenVINO IR files, run without torch.

What an export folder holds, and the checks of one, are :mod:`clipdesk.models.export_files`.
Its vectors carry the source model's key: the export was checked to be faithful (cosine
and top-10 against torch fp32), so they can share an index with vectors made by torch.
Nothing here imports torch or open_clip; the small CPU bundle runs on this module alone.
"""

from __future__ import annotations

import os
import platform
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from clipdesk.backends.choice import BackendChoice, choose
from clipdesk.backends.hardware import cpu_name
from clipdesk.backends.measuring import BackendFactory, ReferenceVectors
from clipdesk.backends.runtimes import BACKEND_NAMES, ImageBackend, openvino_backend, unit_rows
from clipdesk.errors import ModelUnavailableError
from clipdesk.models.export_files import (
    COMPILED_CACHE_SUBDIR,
    ExportManifest,
    check_export,
    verify_export,
)

if TYPE_CHECKING:
    from PIL import Image


class _InferRequest(Protocol):
    """What the text tower is used through: an OpenVINO infer request."""

    def infer(self, inputs: dict[int, np.ndarray], /) -> Mapping[object, object]: ...


# -- preprocessing without torch -----------------------------------------------------------

_PIL_FILTERS = {"bicubic": 3, "bilinear": 2, "nearest": 0, "lanczos": 1}


class PilPreprocess:
    """open_clip's eval transform (resize, centre crop, to tensor, normalise) in PIL and
    numpy, bit-identical to torchvision's on PIL images (tested against it)."""

    def __init__(
        self,
        size: int,
        mean: Sequence[float],
        std: Sequence[float],
        interpolation: str = "bicubic",
        resize_mode: str = "shortest",
    ) -> None:
        if resize_mode not in ("shortest", "squash"):
            raise ModelUnavailableError(f"resize mode {resize_mode!r} is not supported here")
        if interpolation not in _PIL_FILTERS:
            raise ModelUnavailableError(f"interpolation {interpolation!r} is not supported here")
        self.size = size
        self.mode = resize_mode
        self.filter = _PIL_FILTERS[interpolation]
        self.mean = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)
        self.std = np.asarray(std, dtype=np.float32).reshape(3, 1, 1)

    def resize_and_crop(self, image: Image.Image) -> Image.Image:
        size = self.size
        if self.mode == "squash":
            return image.resize((size, size), self.filter)
        width, height = image.size
        short, long = (width, height) if width <= height else (height, width)
        # torchvision: the short side becomes `size`, the long side int(size * long / short)
        if short != size:
            new_long = int(size * long / short)
            new_w, new_h = (size, new_long) if width <= height else (new_long, size)
            image = image.resize((new_w, new_h), self.filter)
        width, height = image.size
        if width < size or height < size:  # torchvision pads with black before cropping
            from PIL import Image as PILImage  # 20 ms; a text search never needs it

            padded = PILImage.new(image.mode, (max(width, size), max(height, size)))
            padded.paste(
                image, ((max(width, size) - width) // 2, (max(height, size) - height) // 2)
            )
            image = padded
            width, height = image.size
        top = round((height - size) / 2.0)
        left = round((width - size) / 2.0)
        return image.crop((left, top, left + size, top + size))

    def __call__(self, image: Image.Image) -> np.ndarray:
        image = self.resize_and_crop(image)
        if image.mode != "RGB":
            image = image.convert("RGB")
        pixels = np.asarray(image, dtype=np.uint8)
        array = pixels.transpose(2, 0, 1).astype(np.float32) / np.float32(255.0)
        array = (array - self.mean) / self.std
        return np.ascontiguousarray(array, dtype=np.float32)


# -- the encoder -----------------------------------------------------------------------------


def openvino_has_bf16() -> bool:
    try:
        import openvino as ov  # 0.5 s to import: only once a choice is measured
    except ImportError:
        return False
    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def runtime_signature() -> str:
    """What a measured choice depends on in the torch-free runtime."""
    try:
        import openvino as ov  # 0.5 s to import: only once a choice is measured

        version = ov.get_version().split("-")[0]
    except ImportError:
        version = "none"
    return " | ".join(
        ["cpu", platform.machine(), cpu_name(), f"openvino {version}", f"{os.cpu_count()} cpus"]
    )


class ExportedEncoder:
    """The same interface as :class:`clipdesk.models.encoder.ClipEncoder`, on an export, without
    torch. Each tower is compiled on first use, so a text search never loads the image
    tower (that is what makes a cold ``clipdesk search`` fast)."""

    device = "cpu"
    precision = "fp32"

    def __init__(self, folder: Path, choices_dir: Path | None = None) -> None:
        from clipdesk.models.tokenizer import ClipTokenizer  # ftfy and regex: 0.1 s, for texts only

        self.folder = folder
        self.manifest = manifest = ExportManifest.read(folder)
        check_export(folder, manifest)  # sizes: a damaged file is named now, not by OpenVINO
        self.spec = manifest.spec
        self.dim = manifest.dim
        self.image_size = manifest.image_size
        self.preprocess = PilPreprocess(
            manifest.image_size,
            manifest.mean,
            manifest.std,
            manifest.interpolation,
            manifest.resize_mode,
        )
        self.tokenizer = ClipTokenizer(folder / manifest.vocab, manifest.context_length)
        self.choices_dir = choices_dir
        self._lock = threading.Lock()  # the towers, built on first use
        self.backend_lock = threading.Lock()  # the choice of image backend
        self._text: _InferRequest | None = None
        self._text_trims = False
        self._image_backend: ImageBackend | None = None
        self._threads: int | None = None
        self.backend_choice: BackendChoice | None = None

    # -- the ClipEncoder interface

    @property
    def description(self) -> str:
        label = self.manifest.label
        if self.spec.is_random:
            label += " (RANDOM WEIGHTS: for tests and benchmarks only, results mean nothing)"
        return label + " (exported)"

    @property
    def device_reason(self) -> str:
        if self.backend_choice is not None:
            return self.backend_choice.reason
        return "cpu: exported model via OpenVINO (torch not used)"

    @property
    def decode_side(self) -> int:
        return 2 * self.image_size  # as ClipEncoder.decode_side explains

    @property
    def logit_scale(self) -> float:
        return self.manifest.logit_scale

    @property
    def image_backend(self) -> ImageBackend:
        with self._lock:
            if self._image_backend is None:
                self._image_backend = self._make_backend("openvino-fp32")
            return self._image_backend

    def _make_backend(self, name: str) -> ImageBackend:
        if not name.startswith("openvino-") or name not in BACKEND_NAMES:
            choices = ", ".join(n for n in BACKEND_NAMES if n.startswith("openvino-"))
            raise ModelUnavailableError(
                f"backend {name!r} needs torch; this clipdesk runs exported models with "
                f"one of {choices}"
            )
        try:
            return openvino_backend(name, self.folder / "visual.xml", threads=self._threads)
        except Exception as exc:
            raise self._load_failed("visual", exc) from exc

    def _load_failed(self, tower: str, exc: Exception) -> ModelUnavailableError:
        """OpenVINO could not read or compile a tower: a damaged file (found by its sha256,
        which is worth its second or two now), or else OpenVINO's own reason."""
        if isinstance(exc, ModelUnavailableError):
            return exc
        try:
            verify_export(self.folder)
        except ModelUnavailableError as damaged:
            return damaged
        first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        return ModelUnavailableError(
            f"OpenVINO cannot load the {tower} tower of the export {self.folder}: {first[:300]}"
        )

    exportable = False  # it is an export already

    def check_encodes(self) -> None:
        """Nothing to do: an export's towers were checked on photos when it was made."""

    def cuda_batch_size(self, default: int) -> int:
        return default  # an export runs on the CPU

    def limit_threads(self, cores: int | None) -> None:
        """Use at most ``cores`` threads for images (None: all); recompiles when it changes."""
        with self._lock:
            if cores == self._threads:
                return
            self._threads = cores
            if self._image_backend is not None:
                self._image_backend = self._make_backend(self._image_backend.name)

    def select_backend(
        self,
        override: str | None = None,
        seconds: float = 2.0,
        probe: np.ndarray | None = None,
        on_reference: ReferenceVectors | None = None,
    ) -> BackendChoice:
        """As ClipEncoder.select_backend: f32 is the reference, bf16 is measured against it
        where the CPU has it, the faster faithful one is kept per model and machine."""
        return choose(self, override, seconds, probe, on_reference)

    # -- what choose() asks of an encoder

    def machine(self) -> str:
        return runtime_signature()

    def takes_override(self, name: str) -> bool:
        return name.startswith("openvino-")  # a torch backend named for the full install

    def unmeasured_reason(self, reference: ImageBackend) -> str:
        return f"cpu: {reference.description} (exported model)"

    def _backend_candidates(
        self, built: dict[str, ImageBackend] | None = None
    ) -> list[BackendFactory]:
        if not openvino_has_bf16():
            return []

        def make() -> ImageBackend:
            backend = self._make_backend("openvino-bf16")
            if built is not None:
                built[backend.name] = backend
            return backend

        make.backend_name = "openvino-bf16"  # type: ignore[attr-defined]
        return [make]

    def adopt(self, name: str, built: ImageBackend | None) -> None:
        with self._lock:
            if self._image_backend is None or name != self._image_backend.name:
                self._image_backend = built or self._make_backend(name)

    def preprocess_image(self, image: Image.Image) -> np.ndarray:
        return self.preprocess(image)

    def encode_batch(self, batch: np.ndarray) -> np.ndarray:
        if self.backend_choice is None and self.choices_dir is not None:
            self.select_backend()
        features: np.ndarray = self.image_backend.encode(np.asarray(batch, dtype=np.float32))
        return unit_rows(features)

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self.encode_batch(np.stack([self.preprocess_image(im) for im in images]))

    def _load_text(self) -> _InferRequest:
        import openvino as ov  # 0.5 s to import: only once a text is encoded

        core = ov.Core()
        model = core.read_model(str(self.folder / "text.xml"))
        config = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
        if os.access(self.folder, os.W_OK):  # a bundled export may be read-only
            # A cold search's first query: 0.73 s compiling, 0.37 s from this cache
            # (ViT-B-32, 2 cores; 122 MB on disk). OpenVINO keys it by model,
            # settings and version, and compiles afresh when an entry is unreadable.
            config["CACHE_DIR"] = str(self.folder / COMPILED_CACHE_SUBDIR)
        # Newer exports of a causal text tower take texts of any length (export.py);
        # earlier exports, and other towers, the whole context.
        self._text_trims = model.input(0).get_partial_shape()[1].is_dynamic
        request: _InferRequest = core.compile_model(model, "CPU", config).create_infer_request()
        return request

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        from clipdesk.models.tokenizer import trim_tokens  # ftfy and regex: 0.1 s, for texts only

        tokens = self.tokenizer(list(texts))
        with self._lock:
            text = self._text
            if text is None:
                try:
                    text = self._text = self._load_text()
                except Exception as exc:
                    raise self._load_failed("text", exc) from exc
            result = text.infer({0: trim_tokens(tokens) if self._text_trims else tokens})
            features = np.array(next(iter(result.values())), dtype=np.float32)
        return unit_rows(features)
