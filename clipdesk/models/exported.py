"""A CLIP model in exported form: both towers as OpenVINO IR files, run without torch.

An export is a folder made by :mod:`clipdesk.models.export` from an open_clip model:

    clipdesk-export.json      the manifest (written last: a folder without it is unfinished)
    visual.xml / visual.bin   the image tower (weights fp16 where that was measured faithful)
    text.xml / text.bin       the text tower
    bpe_simple_vocab_16e6.txt.gz   the tokenizer's vocabulary

Its vectors carry the source model's key: the export was checked to be faithful (cosine
and top-10 against torch fp32), so they can share an index with vectors made by torch.
Nothing here imports torch or open_clip; the small CPU bundle runs on this module alone.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import platform
import re
import shutil
import stat
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

from clipdesk.backends import choice as backends
from clipdesk.backends.choice import (
    BACKEND_NAMES,
    BackendChoice,
    BackendFactory,
    ImageBackend,
    ReferenceVectors,
    cpu_name,
    openvino_backend,
    unit_rows,
)
from clipdesk.errors import ModelUnavailableError
from clipdesk.models.store import copy_hashing, default_models_dir, name_for_key
from clipdesk.spec import ModelSpec

if TYPE_CHECKING:
    from PIL import Image

MANIFEST_NAME = "clipdesk-export.json"
EXPORT_FORMAT = 1
EXPORT_FILES = ("visual.xml", "visual.bin", "text.xml", "text.bin")  # besides the vocabulary
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
EXPORTS_SUBDIR = "exports"
# Inside an export: OpenVINO's compiled text tower, kept between processes (not in the
# manifest; removed with the export).
COMPILED_CACHE_SUBDIR = "compiled-cache"
BUNDLED_MODELS_ENV = "CLIPDESK_BUNDLED_MODELS"  # a read-only folder of exports (the bundle's)


@dataclass
class ExportManifest:
    name: str  # folder name, e.g. "ViT-B-32-laion2b_s34b_b79k"
    key: str  # the source model's key: vectors are interchangeable with torch's
    arch: str
    pretrained: str
    config_json: str | None
    dim: int
    image_size: int
    context_length: int
    logit_scale: float
    mean: list[float]
    std: list[float]
    interpolation: str
    resize_mode: str
    weights: dict[str, str]  # tower -> "fp16" | "fp32" (storage; compute is f32 or bf16)
    fidelity: dict[str, float]  # min cosines and top-10 agreement measured at export
    files: dict[str, str]  # file name -> sha256
    vocab: str
    format: int = EXPORT_FORMAT
    created_with: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def spec(self) -> ModelSpec:
        return ModelSpec(self.arch, self.pretrained, self.config_json, known_key=self.key)

    @property
    def label(self) -> str:
        if (name := name_for_key(self.key)) is not None:
            return name  # an imported model's name, a catalog model's ARCH:TAG
        weights = self.spec.weights_file
        return f"{self.arch}:{weights.name if weights else self.pretrained}"

    def write(self, folder: Path) -> None:
        tmp = folder / (MANIFEST_NAME + ".part")
        tmp.write_text(json.dumps(asdict(self), indent=1), encoding="utf-8")
        os.replace(tmp, folder / MANIFEST_NAME)

    @property
    def sizes(self) -> dict[str, int]:
        """File name -> size in bytes, where the export recorded them (in ``extra``, which
        earlier versions read too; exports made before have none)."""
        sizes = self.extra.get("sizes")
        if not isinstance(sizes, dict):
            return {}
        return {k: v for k, v in sizes.items() if isinstance(v, int) and not isinstance(v, bool)}

    @classmethod
    def read(cls, folder: Path) -> ExportManifest:
        path = folder / MANIFEST_NAME
        if not path.exists() and not path.is_symlink():
            raise ModelUnavailableError(f"{folder} is not a clipdesk export (no {MANIFEST_NAME})")
        try:
            with open_in_export(folder, MANIFEST_NAME) as fh:
                data = json.loads(fh.read().decode("utf-8"))
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            known = {f.name for f in fields(cls)}
            # Fields a later version adds are left out: its exports stay readable here.
            manifest = cls(**{k: v for k, v in data.items() if k in known})
            manifest._check_types()
        except ModelUnavailableError:
            raise
        except (OSError, ValueError, TypeError, RecursionError) as exc:
            raise ModelUnavailableError(f"cannot read {path}: {exc}") from exc
        if manifest.format != EXPORT_FORMAT:
            raise ModelUnavailableError(
                f"{folder} is an export of format {manifest.format}; this clipdesk reads "
                f"format {EXPORT_FORMAT} (export the model again with this version)"
            )
        manifest._check_names(path)
        return manifest

    def _check_types(self) -> None:
        """Each field of the JSON type it is written with (a hand-edited or hostile manifest
        must give a message, not a TypeError deep inside an import)."""
        kinds: dict[str, type | tuple[type, ...]] = {
            "config_json": (str, type(None)),
            "dim": int,
            "image_size": int,
            "context_length": int,
            "logit_scale": (int, float),
            "mean": list,
            "std": list,
            "weights": dict,
            "fidelity": dict,
            "files": dict,
            "format": int,
            "extra": dict,
        }
        for f in fields(self):
            value = getattr(self, f.name)
            kind = kinds.get(f.name, str)
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise ValueError(f"its field {f.name!r} is a {type(value).__name__}")

    def _check_names(self, path: Path) -> None:
        """Every name the manifest gives a file or folder is a plain name inside the export:
        an export copied from elsewhere must not make clipdesk read or write outside it."""
        files = self.files
        if not isinstance(files, dict) or not all(
            isinstance(v, str) and SHA256_HEX.match(v) for v in files.values()
        ):
            raise ModelUnavailableError(f"{path} is damaged: its file list is not name -> sha256")
        for what, name in [
            ("export name", self.name),
            ("vocabulary", self.vocab),
            *(("file", n) for n in files),
        ]:
            if not is_plain_name(name):
                raise ModelUnavailableError(
                    f"refused: {path} names the {what} {name!r}, which is not a plain file "
                    "name inside the export (an export never names anything elsewhere)"
                )
        missing = [n for n in (*EXPORT_FILES, self.vocab) if n not in files]
        if missing:
            raise ModelUnavailableError(
                f"{path} is damaged: its file list lacks {', '.join(missing)}"
            )


def export_name(spec: ModelSpec) -> str:
    """A folder name that says what the export is and differs for different weights."""
    pretrained = spec.pretrained
    if (weights := spec.weights_file) is not None:
        pretrained = weights.stem
    readable = "".join(c if c.isalnum() or c in "._-" else "-" for c in f"{spec.arch}-{pretrained}")
    return f"{readable[:60]}-{hashlib.sha256(spec.key.encode()).hexdigest()[:8]}"


def is_plain_name(name: object) -> bool:
    """A file name with no folder part, on any system: no ``..``, no absolute path, no
    drive, no separator."""
    return (
        isinstance(name, str)
        and name not in ("", ".", "..")
        and "\0" not in name
        and PurePosixPath(name).name == name
        and PureWindowsPath(name).name == name
    )


@contextmanager
def open_in_export(folder: Path, name: str) -> Iterator[BinaryIO]:
    """``folder/name`` opened for reading, once it is known to be a regular file inside
    ``folder`` (a link to another file of the export is fine). A link that leaves the
    export, a FIFO or a device is refused: reading those reads anything, or never ends."""
    path = folder / name
    if not is_plain_name(name):
        raise ModelUnavailableError(f"refused: {name!r} is not a plain file name")
    try:
        real = path.resolve(strict=True)
        root = folder.resolve(strict=True)
        info = os.stat(real)
    except FileNotFoundError:
        raise ModelUnavailableError(
            f"the export {folder} is incomplete: {name} is missing"
        ) from None
    except (OSError, RuntimeError) as exc:  # RuntimeError: a loop of links
        raise ModelUnavailableError(f"cannot read {path}: {exc}") from exc
    if not real.is_relative_to(root):
        raise ModelUnavailableError(f"refused: {path} is a link to {real}, outside the export")
    if not stat.S_ISREG(info.st_mode):
        raise ModelUnavailableError(f"refused: {path} is not a regular file")
    # Should it have been swapped since the check: O_NONBLOCK opens a FIFO without waiting
    # for a writer (fstat then refuses it), O_NOFOLLOW refuses a link.
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(real, flags | getattr(os, "O_BINARY", 0))
    except OSError as exc:
        raise ModelUnavailableError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ModelUnavailableError(f"refused: {path} is not a regular file")
        fh = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with fh:
        yield fh


class ExportDamagedError(ModelUnavailableError):
    """An export whose files are not what its manifest says (truncated, altered, gone)."""


def damaged_export(folder: Path, detail: str) -> ExportDamagedError:
    """The error for a damaged export, saying what to do about it."""
    bundled = bundled_models_dir()
    if bundled is not None and folder.resolve().is_relative_to(bundled.resolve()):
        advice = "this copy of clipdesk is damaged: install it again"
    else:
        advice = (
            "import it again with `clipdesk models import --export FOLDER` from the export "
            "it was copied from, or make it again on the full clipdesk with `clipdesk models "
            "export --again`"
        )
        if torch_available():
            advice += " (meanwhile clipdesk runs the model with torch where it has its weights)"
    return ExportDamagedError(f"the exported model in {folder} is damaged ({detail}); {advice}")


# An IR's weights: <data ... offset="N" size="M" .../> of each constant, into the .bin.
_IR_DATA = re.compile(rb"<data\b[^>]*>")
_IR_OFFSET = re.compile(rb'\boffset="(\d+)"')
_IR_SIZE = re.compile(rb'\bsize="(\d+)"')


def ir_weights_extent(xml: Path) -> int:
    """How many bytes of its .bin an OpenVINO IR reads: the end of its last constant."""
    end = 0
    for tag in _IR_DATA.findall(xml.read_bytes()):
        offset, size = _IR_OFFSET.search(tag), _IR_SIZE.search(tag)
        if offset and size:
            end = max(end, int(offset.group(1)) + int(size.group(1)))
    return end


def check_export(folder: Path, manifest: ExportManifest) -> None:
    """Cheap checks of an export before it is used (no hashing): each listed file is a
    regular file inside it, of the size recorded; each tower's .bin holds every weight
    its .xml reads (exports from before sizes were recorded). Raises ExportDamagedError."""
    sizes = manifest.sizes
    root = folder.resolve()
    have: dict[str, int] = {}
    for name in manifest.files:
        path = folder / name
        try:
            real = path.resolve(strict=True)
            info = os.stat(real)
        except (OSError, RuntimeError):
            raise damaged_export(folder, f"{name} is missing") from None
        if not real.is_relative_to(root) or not stat.S_ISREG(info.st_mode):
            raise damaged_export(folder, f"{name} is not a regular file inside it")
        have[name] = info.st_size
        if name in sizes and info.st_size != sizes[name]:
            raise damaged_export(
                folder, f"{name} has {info.st_size} bytes, the export wrote {sizes[name]}"
            )
    for tower in ("visual", "text"):
        xml, weights = f"{tower}.xml", f"{tower}.bin"
        if xml in sizes and weights in sizes:
            continue  # both sizes checked above
        try:
            need = ir_weights_extent(folder / xml)
        except OSError as exc:
            raise damaged_export(folder, f"{xml} cannot be read: {exc}") from exc
        if have[weights] < need:
            raise damaged_export(
                folder, f"{weights} has {have[weights]} bytes, its model reads {need}"
            )


def move_into_place(work: Path, target: Path) -> None:
    """Rename the finished ``work`` folder to ``target``; an export already there is set
    aside first and removed after, so that ``target`` is never half of either."""
    if not target.exists():
        os.replace(work, target)
        return
    aside = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
    os.replace(target, aside / "export")
    try:
        os.replace(work, target)
    except OSError:
        os.replace(aside / "export", target)  # put the old one back
        aside.rmdir()
        raise
    shutil.rmtree(aside, ignore_errors=True)


# -- where exports are -------------------------------------------------------------------


def bundled_models_dir() -> Path | None:
    """The exports shipped with a frozen app (read-only), or $CLIPDESK_BUNDLED_MODELS."""
    env = os.environ.get(BUNDLED_MODELS_ENV)
    if env:
        return Path(env)
    frozen_root = getattr(sys, "_MEIPASS", None)
    if frozen_root:
        return Path(frozen_root) / "models"
    return None


def export_folders(models_dir: Path | None = None) -> list[Path]:
    """Folders that may hold exports: the user's models folder first, then the bundle's."""
    folders = [(models_dir or default_models_dir()) / EXPORTS_SUBDIR]
    bundled = bundled_models_dir()
    if bundled is not None:
        folders.append(bundled)
    return folders


def available_exports(models_dir: Path | None = None) -> list[tuple[Path, ExportManifest]]:
    found: list[tuple[Path, ExportManifest]] = []
    seen: set[str] = set()
    for folder in export_folders(models_dir):
        if not folder.is_dir():
            continue
        for child in sorted(folder.iterdir()):
            if not (child / MANIFEST_NAME).is_file():
                continue  # unfinished, or not an export
            try:
                manifest = ExportManifest.read(child)
            except ModelUnavailableError:
                continue
            if manifest.key not in seen:
                seen.add(manifest.key)
                found.append((child, manifest))
    return found


def find_export(key: str, models_dir: Path | None = None, intact: bool = False) -> Path | None:
    """The export of the model ``key``: the user's, else the bundle's. ``intact``: only
    one that passes :func:`check_export` (a damaged one is passed over)."""
    for base in export_folders(models_dir):
        if not base.is_dir():
            continue
        for child in sorted(base.iterdir()):
            if not (child / MANIFEST_NAME).is_file():
                continue
            try:
                manifest = ExportManifest.read(child)
                if manifest.key != key:
                    continue
                if intact:
                    check_export(child, manifest)
            except ModelUnavailableError:
                continue
            return child
    return None


NO_TORCH_ENV = "CLIPDESK_NO_TORCH"  # behave as the CPU bundle does (tests, comparisons)


def torch_available() -> bool:
    """Whether open_clip on torch can run here (the full install, not the CPU bundle)."""
    if os.environ.get(NO_TORCH_ENV):
        return False
    try:
        return bool(importlib.util.find_spec("torch") and importlib.util.find_spec("open_clip"))
    except (ImportError, ValueError):  # blocked, or a broken install
        return False


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
            from PIL import Image as PILImage

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
        import openvino as ov
    except ImportError:
        return False
    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def runtime_signature() -> str:
    """What a measured choice depends on in the torch-free runtime."""
    try:
        import openvino as ov

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
        self._text: Any = None
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
        return backends.choose(self, override, seconds, probe, on_reference)

    # -- what backends.choose asks of an encoder

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

    def _load_text(self) -> None:
        import openvino as ov

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
        self._text = core.compile_model(model, "CPU", config).create_infer_request()

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        from clipdesk.models.tokenizer import trim_tokens  # ftfy and regex: 0.1 s, for texts only

        tokens = self.tokenizer(list(texts))
        with self._lock:
            if self._text is None:
                try:
                    self._load_text()
                except Exception as exc:
                    raise self._load_failed("text", exc) from exc
            result = self._text.infer({0: trim_tokens(tokens) if self._text_trims else tokens})
            features = np.array(next(iter(result.values())), dtype=np.float32)
        return unit_rows(features)


def verify_export(folder: Path) -> ExportManifest:
    """The manifest of ``folder``, once every file it lists has its recorded sha256."""
    manifest = ExportManifest.read(folder)
    for name, expected in manifest.files.items():
        with open_in_export(folder, name) as fh:
            try:
                actual = _sha256(fh)
            except OSError as exc:
                raise damaged_export(folder, f"{name} cannot be read: {exc}") from exc
        if actual != expected:
            raise damaged_export(folder, f"{name}'s sha256 differs from the manifest's")
    return manifest


def _sha256(fh: BinaryIO) -> str:
    digest = hashlib.sha256()
    for chunk in iter(lambda: fh.read(1 << 20), b""):
        digest.update(chunk)
    return digest.hexdigest()


def install_export(source: Path, models_dir: Path | None = None) -> Path:
    """Copy an export folder into the models folder, checking each file's sha256 as it
    is copied (what is checked is what is installed); returns the copy. Only the files the
    manifest lists, each a regular file inside ``source``, are read, and only the models
    folder's exports/ is written. An installed copy that is damaged is replaced."""
    manifest = ExportManifest.read(source)
    exports = (models_dir or default_models_dir()) / EXPORTS_SUBDIR
    target = exports / manifest.name  # a plain name (ExportManifest.read)
    if (target / MANIFEST_NAME).is_file():
        try:
            if verify_export(target).key == manifest.key:
                return target
        except ModelUnavailableError:
            pass  # damaged or something else: replaced below
    try:
        exports.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{manifest.name}.", suffix=".part", dir=exports))
    except OSError as exc:
        raise ModelUnavailableError(
            f"cannot write to the models folder {exports}: {exc.strerror or exc}"
        ) from exc
    try:
        sizes: dict[str, int] = {}
        for name, expected in manifest.files.items():
            with open_in_export(source, name) as src:
                try:
                    with open(work / name, "xb") as out:
                        digest = copy_hashing(src, out)
                        sizes[name] = out.tell()
                except OSError as exc:
                    raise ModelUnavailableError(
                        f"cannot copy {source / name} into {exports}: {exc.strerror or exc}"
                    ) from exc
            if digest != expected:
                raise ModelUnavailableError(
                    f"{source / name} is damaged (its sha256 differs from the manifest)"
                )
        manifest.extra = {**manifest.extra, "sizes": sizes}
        manifest.write(work)
        os.chmod(work, 0o755)
        move_into_place(work, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target
