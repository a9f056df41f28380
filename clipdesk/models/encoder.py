"""CLIP models on torch: pick a device, load open_clip, encode images and text.

torch and open_clip are imported inside functions: importing this module is cheap.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from clipdesk.backends import hardware
from clipdesk.backends.choice import BackendChoice, choose
from clipdesk.backends.measuring import (
    BackendFactory,
    ReferenceVectors,
    current_watch,
    stop_if_cancelled,
)
from clipdesk.backends.onnx_export import export_visual_onnx, visual_onnx_name
from clipdesk.backends.runtimes import (
    BACKEND_NAMES,
    BackendUnavailable,
    ImageBackend,
    TorchBackend,
    openvino_backend,
    unit_rows,
)
from clipdesk.errors import ModelUnavailableError
from clipdesk.models.aside import run_aside, spec_fields
from clipdesk.models.catalog import catalog_entry
from clipdesk.models.export_files import find_export
from clipdesk.models.hub import hub_reachable, no_network_message
from clipdesk.models.loading import create_pretrained_model, register_config
from clipdesk.models.store import ModelStore
from clipdesk.spec import RANDOM_SEED, ModelSpec

if TYPE_CHECKING:
    from PIL import Image


def pick_device(preference: str = "auto") -> tuple[str, str]:
    """The device to run on and why: CUDA, then Apple MPS, then the CPU."""
    import torch  # torch: seconds to import, only once a model runs

    if preference not in ("auto", "cpu", "cuda", "mps"):
        raise ModelUnavailableError(f"unknown device {preference!r}: use auto, cpu, cuda or mps")
    cuda = torch.cuda.is_available()
    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    if preference == "cuda" and not cuda:
        raise ModelUnavailableError("--device cuda was asked for, but no CUDA GPU is available")
    if preference == "mps" and not mps:
        raise ModelUnavailableError("--device mps was asked for, but Apple MPS is not available")
    if preference in ("auto", "cuda") and cuda:
        return "cuda", f"cuda: {torch.cuda.get_device_name(0)}, fp16"
    if preference in ("auto", "mps") and mps:
        return "mps", "mps: Apple GPU, fp32"
    if preference == "cpu":
        return "cpu", f"cpu: CPU chosen by setting, fp32, {torch.get_num_threads()} threads"
    return "cpu", f"cpu: no CUDA or MPS available, fp32, {torch.get_num_threads()} threads"


def batch_for_memory(free_bytes: int, per_image_bytes: int, low: int = 32, high: int = 1024) -> int:
    """Images per batch that fit in half of ``free_bytes`` (the rest for the allocator,
    other programs and the next batch's copy), a multiple of 32 within [low, high]."""
    fits = int(free_bytes * 0.5 // max(per_image_bytes, 1))
    return max(low, min(high, fits // 32 * 32))


@contextlib.contextmanager
def _hub_offline() -> Iterator[None]:
    from huggingface_hub import constants  # not in the CPU bundle

    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


class Encoder(Protocol):
    """What services need of a model: :class:`ClipEncoder` (open_clip on torch) or
    :class:`clipdesk.models.exported.ExportedEncoder` (an export, without torch)."""

    spec: ModelSpec
    device: str
    dim: int
    image_size: int
    backend_choice: BackendChoice | None
    # open_clip on torch: can be exported (``clipdesk models export``); an export cannot
    exportable: bool

    @property
    def description(self) -> str: ...
    @property
    def device_reason(self) -> str: ...
    @property
    def decode_side(self) -> int: ...
    @property
    def logit_scale(self) -> float: ...
    def select_backend(
        self,
        override: str | None = None,
        seconds: float = 2.0,
        probe: np.ndarray | None = None,
        on_reference: ReferenceVectors | None = None,
    ) -> BackendChoice: ...
    def preprocess_image(self, image: Image.Image) -> np.ndarray: ...
    def encode_batch(self, batch: np.ndarray) -> np.ndarray: ...
    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray: ...
    def encode_texts(self, texts: Sequence[str]) -> np.ndarray: ...
    # ModelUnavailableError where the model loads but cannot encode a photo
    def check_encodes(self) -> None: ...
    def limit_threads(self, cores: int | None) -> None: ...  # image threads (None: all)
    # the batch that fits the GPU's free memory; ``default`` off CUDA
    def cuda_batch_size(self, default: int) -> int: ...


@contextlib.contextmanager
def _no_weights_notice() -> Iterator[None]:
    """Drop open_clip's "No pretrained weights loaded ... initialized randomly" warning
    while building a model whose weights clipdesk loads itself (or that is ``random`` on
    purpose, which status reports): users read it as their model being broken."""

    def keep(record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("No pretrained weights loaded")

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


@contextlib.contextmanager
def _config_errors(spec: ModelSpec) -> Iterator[None]:
    """open_clip's errors on a custom architecture's config, as a message (with one of
    open_clip's own architectures, an error is a bug: its traceback shows)."""
    try:
        yield
    except ModelUnavailableError:
        raise
    except Exception as exc:
        if spec.config_json is None:
            raise
        reason = (str(exc).strip().splitlines() or [""])[0][:300]
        raise ModelUnavailableError(
            f"open_clip cannot make {spec.arch} from its model config: "
            f"{type(exc).__name__}: {reason}"
        ) from exc


class ClipEncoder:
    """A loaded CLIP model on one device, encoding to L2-normalised float32 numpy rows."""

    def __init__(
        self,
        spec: ModelSpec,
        device: str = "auto",
        cache_dir: Path | None = None,
        choices_dir: Path | None = None,
        store: ModelStore | None = None,
    ):
        """``store``: the app's models folder, where a catalog model's weights are found
        (and downloaded); None: the default one, for a process without an app (a
        benchmark, a test, an export's child process)."""
        import open_clip  # seconds to import (torch): only once a model is loaded
        import torch

        from clipdesk.backends.towers import short_text_tower  # imports torch and open_clip

        self.spec = spec
        self._cache_dir = cache_dir
        self._store = store
        self.device, self._device_reason = pick_device(device)
        arch = register_config(spec)
        if arch not in open_clip.list_models():
            raise ModelUnavailableError(
                f"unknown model architecture {spec.arch!r}; pass --model-config FILE.json for a "
                "custom one (open_clip lists: " + ", ".join(open_clip.list_models()[:8]) + ", ...)"
            )
        with _config_errors(spec):
            model = self._create(arch, cache_dir)
        self.precision = "fp16" if self.device == "cuda" else "fp32"
        model = model.to(self.device)
        if self.precision == "fp16":
            model = model.half()
        model.eval()
        self.model = model
        # Images go through the reference backend until ``select_backend`` measured the
        # faster ones (on first use, when a choices folder is given).
        self.image_backend: ImageBackend = TorchBackend(model, self.device, self.precision)
        self.backend_choice: BackendChoice | None = None
        self.choices_dir = choices_dir
        self.backend_lock = threading.Lock()
        self.tokenizer = open_clip.get_tokenizer(arch)
        # Texts read only as many positions as the longest needs, where that is exact
        # (CLIP's causal text towers): a search or a tagging prompt is ~10 tokens of 77.
        self._short_text = short_text_tower(model)
        size = model.visual.image_size
        self.image_size = int(size[0] if isinstance(size, tuple | list) else size)
        # The model's own preprocessing (size, mean/std, interpolation, resize mode), as
        # open_clip records it for each pretrained model.
        cfg = open_clip.get_model_preprocess_cfg(model)
        self.preprocess = open_clip.image_transform(
            cfg.get("size", self.image_size),
            is_train=False,
            mean=cfg.get("mean"),
            std=cfg.get("std"),
            resize_mode=cfg.get("resize_mode"),
            interpolation=cfg.get("interpolation"),
            fill_color=cfg.get("fill_color", 0),
        )
        self._split_preprocess()
        with torch.inference_mode(), _config_errors(spec):
            probe = self.encode_texts(["a photo"])
        self.dim = int(probe.shape[1])

    def _create(self, arch: str, cache_dir: Path | None) -> Any:
        """open_clip's model for the spec (open_clip is untyped: so is its model)."""
        import open_clip  # torch: seconds to import; __init__ has it already
        import torch

        spec = self.spec
        if spec.is_random:
            # Seeded, so every process builds identical weights (tests and benchmarks).
            with torch.random.fork_rng(devices=[]), _no_weights_notice():
                torch.manual_seed(RANDOM_SEED)
                return open_clip.create_model(arch, pretrained=None)
        weights = spec.weights_file
        if weights is not None:
            if not weights.is_file():
                raise ModelUnavailableError(f"weights file not found: {weights}")
            entry = catalog_entry(spec.known_key) if spec.known_key else None
            if entry is not None:
                # A downloaded catalog model: open_clip's settings for that tag (QuickGELU,
                # mean/std) come with it.
                return create_pretrained_model(arch, entry.pretrained, weights)
            with _no_weights_notice():  # the weights are loaded right below
                model = open_clip.create_model(arch, pretrained=None)
            try:
                open_clip.load_checkpoint(model, str(weights), weights_only=True)
            except Exception as exc:
                raise ModelUnavailableError(
                    f"cannot load weights {weights} into {spec.arch}: {type(exc).__name__}: "
                    f"{str(exc)[:300]}"
                ) from exc
            return model
        tags = open_clip.list_pretrained_tags_by_model(arch)
        if spec.pretrained not in tags:
            raise ModelUnavailableError(
                f"{spec.arch} has no pretrained weights named {spec.pretrained!r} "
                f"(known: {', '.join(tags) or 'none'}; or pass a weights file, or 'random')"
            )
        store = self._store or ModelStore()
        installed = store.spec_for(spec.spec)
        if installed is None:
            cache = str(cache_dir) if cache_dir else None
            try:
                # Fetched by an earlier clipdesk through open_clip's cache? No network then.
                with _hub_offline():
                    return open_clip.create_model(arch, pretrained=spec.pretrained, cache_dir=cache)
            except Exception:
                pass
            if catalog_entry(spec.spec) is None:
                # Not in clipdesk's catalog: open_clip downloads it, as before the store.
                if not hub_reachable():
                    raise ModelUnavailableError(no_network_message(spec.spec))
                try:
                    return open_clip.create_model(arch, pretrained=spec.pretrained, cache_dir=cache)
                except Exception as exc:
                    first_line = str(exc).splitlines()[0][:200] if str(exc) else ""
                    raise ModelUnavailableError(no_network_message(spec.spec, first_line)) from exc
            if not store.reachable():  # a fast answer offline instead of a minute of retries
                raise ModelUnavailableError(no_network_message(spec.spec))
            installed = store.download(spec.spec)
        assert installed.weights_file is not None
        return create_pretrained_model(arch, spec.pretrained, installed.weights_file)

    @property
    def device_reason(self) -> str:
        """Device and how images are encoded on it, for ``status``."""
        if self.backend_choice is None:
            return self._device_reason
        detail = self._device_reason.split(":", 1)[1].strip() if ":" in self._device_reason else ""
        # The backend says the precision; keep the rest ("no CUDA or MPS available, 2 threads").
        detail = ", ".join(p for p in detail.split(", ") if p not in ("fp32", "fp16", "bf16"))
        return f"{self.backend_choice.reason} ({detail})" if detail else self.backend_choice.reason

    def select_backend(
        self,
        override: str | None = None,
        seconds: float = 2.0,
        probe: np.ndarray | None = None,
        on_reference: ReferenceVectors | None = None,
    ) -> BackendChoice:
        """Use the fastest faithful image backend for this model on this machine: measured
        once and remembered, or ``override`` (a backend name, or $CLIPDESK_BACKEND).
        ``probe``: preprocessed photos to judge fidelity on (the user's own, ideally).
        ``on_reference``: given the probe's features from the reference pass, if one runs
        (as unit rows, they are the vectors the default backend stores: the caller can keep
        them). Measured once per model and machine: :func:`clipdesk.backends.choice.choose`."""
        return choose(self, override, seconds, probe, on_reference)

    # -- what choose() asks of an encoder

    def machine(self) -> str:
        return hardware.machine_signature(self.device)

    def takes_override(self, name: str) -> bool:
        return True  # an unknown name is refused when it is built

    def unmeasured_reason(self, reference: ImageBackend) -> str:
        return f"{self.device}: {reference.description}"

    def adopt(self, name: str, built: ImageBackend | None) -> None:
        if name != self.image_backend.name:
            self.image_backend = built or self._make_backend(name)

    def _exports_dir(self) -> Path:
        base = self.choices_dir or Path(tempfile.gettempdir()) / "clipdesk-exports"
        return base / "exports"

    def _make_backend(self, name: str) -> ImageBackend:
        if name.startswith("torch-"):
            return TorchBackend(self.model, self.device, name.removeprefix("torch-"))
        if name.startswith("openvino-") and name in BACKEND_NAMES:
            # `clipdesk models export` made it already (unless it is damaged)
            export = find_export(self.spec.key, intact=True)
            if export is not None:
                source = export / "visual.xml"
            else:
                source = export_visual_onnx_aside(
                    self.spec,
                    self._cache_dir,
                    self.image_size,
                    self._exports_dir() / visual_onnx_name(self.spec.key),
                )
            return openvino_backend(name, source)
        raise ModelUnavailableError(
            f"unknown encoder backend {name!r} (use {', '.join(BACKEND_NAMES)})"
        )

    def _backend_candidates(
        self, built: dict[str, ImageBackend] | None = None
    ) -> list[BackendFactory]:
        """Factories of the backends worth measuring against fp32 on this device; each puts
        what it builds into ``built``, by name."""
        names: list[str] = []
        if self.device == "cpu":
            if hardware.cpu_has_native_bf16():
                names.append("torch-bf16")
            # OpenVINO: its tower is exported in a child process (the exporter holds the
            # GIL), or taken from the model's export. CLIPDESK_NO_OPENVINO=1 skips it.
            if not os.environ.get("CLIPDESK_NO_OPENVINO") and importlib.util.find_spec("openvino"):
                if hardware.cpu_has_native_bf16():
                    names.append("openvino-bf16")
                names.append("openvino-fp32")
        elif self.device == "mps":
            names.append("torch-fp16")
        factories: list[BackendFactory] = []
        for name in names:

            def make(name: str = name) -> ImageBackend:
                backend = self._make_backend(name)
                if built is not None:
                    built[name] = backend
                return backend

            make.backend_name = name  # type: ignore[attr-defined]
            if name == "openvino-fp32" and "openvino-bf16" in names:
                # native bf16 measured twice as fast: fp32 only matters if bf16 is unfaithful
                make.skip_if_faithful = "openvino-bf16"  # type: ignore[attr-defined]
            factories.append(make)
        return factories

    exportable = True

    def check_encodes(self) -> None:
        """One blank photo through the model before it becomes the library's target: a
        model that loads but cannot encode photos (a custom config's) must not stay it."""
        from PIL import Image  # 20 ms at start-up, for this check only

        try:
            side = max(self.decode_side, 1)
            blank = Image.new("RGB", (side, side))
            self.image_backend.encode(self.preprocess_image(blank)[None])
        except Exception as exc:
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            raise ModelUnavailableError(
                f"{self.spec.arch} cannot encode a photo ({type(exc).__name__}: {reason}); "
                "the library's model is unchanged"
            ) from exc

    def limit_threads(self, cores: int | None) -> None:
        """Nothing to do: torch's threads follow the throttle (:func:`throttle.applied`)."""

    def cuda_batch_size(self, default: int) -> int:
        """On CUDA, a batch as large as free GPU memory allows (measured: the peak memory of
        a probe batch per image); ``default`` elsewhere."""
        if self.device != "cuda":
            return default
        import torch  # torch: seconds to import, only once a model runs

        probe = 16
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        batch = np.zeros((probe, 3, self.image_size, self.image_size), np.float32)
        self.image_backend.encode(batch)
        per_image = (torch.cuda.max_memory_allocated() - before) // probe
        free, _total = torch.cuda.mem_get_info()
        return batch_for_memory(int(free), int(per_image))

    @property
    def description(self) -> str:
        label = self.spec.spec
        if self.spec.is_random:
            label += " (RANDOM WEIGHTS: for tests and benchmarks only, results mean nothing)"
        return label

    @property
    def decode_side(self) -> int:
        """The smallest side to decode photos at. JPEG draft (DCT) scaling is a cruder
        filter than the model's antialiased resize, so decode at twice the input and let
        the resize do the last step: on 12 MP photos this costs ~1 ms more per photo
        (Huffman decoding dominates), and keeps rankings equal to a full decode."""
        return 2 * self.image_size

    @property
    def logit_scale(self) -> float:
        """The model's learned temperature (CLIP's ``logit_scale.exp()``)."""
        return float(self.model.logit_scale.exp().item())

    def preprocess_image(self, image: Image.Image) -> np.ndarray:
        """open_clip's own transform, with ToTensor + Normalize done in numpy.

        The result is bit-identical; the reason is that torch ops run on torch's shared
        intra-op threads, and called from several decode threads while the model runs they
        were measured 10-50x slower on a busy 2-core machine (bench/README.md).
        """
        if self._pil_steps is None:
            tensor = self.preprocess(image)
            return np.ascontiguousarray(tensor.numpy(), dtype=np.float32)
        for step in self._pil_steps:
            image = step(image)
        pixels = np.asarray(image, dtype=np.uint8)
        if pixels.ndim == 2:
            pixels = np.repeat(pixels[:, :, None], 3, axis=2)
        array = pixels.transpose(2, 0, 1).astype(np.float32) / np.float32(255.0)
        array = (array - self._mean) / self._std
        return np.ascontiguousarray(array, dtype=np.float32)

    def _split_preprocess(self) -> None:
        """Find the PIL steps and the Normalize constants of open_clip's Compose."""
        self._pil_steps: list[Callable[[Image.Image], Image.Image]] | None = None
        steps = list(getattr(self.preprocess, "transforms", []))
        names = [type(step).__name__ for step in steps]
        if len(names) < 2 or names[-1] != "Normalize" or "ToTensor" not in names[-2]:
            return  # an unfamiliar pipeline: use it as it is
        normalize = steps[-1]
        self._mean = np.asarray(normalize.mean, dtype=np.float32).reshape(3, 1, 1)
        self._std = np.asarray(normalize.std, dtype=np.float32).reshape(3, 1, 1)
        self._pil_steps = steps[:-2]

    # encode_batch also takes a torch tensor, on the model's device (device_decode.py)
    takes_tensors = True

    def encode_batch(self, batch: np.ndarray) -> np.ndarray:
        if self.backend_choice is None and self.choices_dir is not None:
            self.select_backend()
        if not isinstance(batch, np.ndarray) and not getattr(
            self.image_backend, "takes_tensors", False
        ):
            batch = batch.cpu().numpy()  # an exported runtime reads numpy
        return unit_rows(self.image_backend.encode(batch))

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self.encode_batch(np.stack([self.preprocess_image(im) for im in images]))

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        import torch  # torch: seconds to import, only once a model runs

        from clipdesk.models.tokenizer import trim_tokens  # ftfy and regex: 0.1 s, for texts only

        tokens = self.tokenizer(list(texts))
        with torch.inference_mode():
            if self._short_text is not None:
                features = self._short_text(trim_tokens(tokens).to(self.device))
            else:
                features = self.model.encode_text(tokens.to(self.device))
            features = torch.nn.functional.normalize(features.float(), dim=-1)
        return features.cpu().numpy().astype(np.float32, copy=False)


def _export_visual_in_child(
    fields: tuple[str, str, str | None, str | None],
    cache_dir: str | None,
    image_size: int,
    target: str,
) -> None:
    encoder = ClipEncoder(ModelSpec(*fields), "cpu", Path(cache_dir) if cache_dir else None)
    export_visual_onnx(encoder.model, image_size, Path(target))


def export_visual_onnx_aside(
    spec: ModelSpec, cache_dir: Path | None, image_size: int, target: Path, timeout: float = 900
) -> Path:
    """:func:`export_visual_onnx` in a child process (:mod:`clipdesk.models.aside`: torch's exporter
    holds the GIL), once per model and machine."""
    if target.is_file():
        return target
    cache = str(cache_dir) if cache_dir else None
    cancel = current_watch().cancel  # a measurement's Ctrl+C kills the child at once
    code = run_aside(
        _export_visual_in_child,
        (spec_fields(spec), cache, image_size, str(target)),
        cancel,
        timeout=timeout,
    )
    stop_if_cancelled(cancel)
    if code != 0 or not target.is_file():
        raise BackendUnavailable(f"exporting the image tower failed (exit {code})")
    return target
