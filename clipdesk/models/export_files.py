"""An exported model's folder: its manifest, the checks that it is whole and stays inside
itself, where exports are (the models folder's, the bundle's), and installing a copy.

An export is a folder made by :mod:`clipdesk.models.export` from an open_clip model:

    clipdesk-export.json      the manifest (written last: a folder without it is unfinished)
    visual.xml / visual.bin   the image tower (weights fp16 where that was measured faithful)
    text.xml / text.bin       the text tower
    bpe_simple_vocab_16e6.txt.gz   the tokenizer's vocabulary

:class:`clipdesk.models.exported.ExportedEncoder` runs one. Nothing here imports torch,
open_clip or OpenVINO.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import stat
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import BinaryIO

from clipdesk.errors import ModelUnavailableError
from clipdesk.files import SHA256_HEX, atomic_write, copy_hashing, sha256_stream
from clipdesk.models.store import default_models_dir, name_for_key
from clipdesk.spec import ModelSpec

MANIFEST_NAME = "clipdesk-export.json"
EXPORT_FORMAT = 1
EXPORT_FILES = ("visual.xml", "visual.bin", "text.xml", "text.bin")  # besides the vocabulary
EXPORTS_SUBDIR = "exports"
# Inside an export: OpenVINO's compiled text tower, kept between processes (not in the
# manifest; removed with the export).
COMPILED_CACHE_SUBDIR = "compiled-cache"
BUNDLED_MODELS_ENV = "CLIPDESK_BUNDLED_MODELS"  # a read-only folder of exports (the bundle's)
NO_TORCH_ENV = "CLIPDESK_NO_TORCH"  # behave as the CPU bundle does (tests, comparisons)


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
    extra: dict[str, object] = field(default_factory=dict)

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
        # shared: readable by everyone, as the export's other files are (a bundle's
        # exports are read by every user of the machine)
        atomic_write(folder / MANIFEST_NAME, json.dumps(asdict(self), indent=1), shared=True)

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


def torch_available() -> bool:
    """Whether open_clip on torch can run here (the full install, not the CPU bundle)."""
    if os.environ.get(NO_TORCH_ENV):
        return False
    try:
        return bool(importlib.util.find_spec("torch") and importlib.util.find_spec("open_clip"))
    except (ImportError, ValueError):  # blocked, or a broken install
        return False


# -- checking and installing a copy --------------------------------------------------------


def verify_export(folder: Path) -> ExportManifest:
    """The manifest of ``folder``, once every file it lists has its recorded sha256."""
    manifest = ExportManifest.read(folder)
    for name, expected in manifest.files.items():
        with open_in_export(folder, name) as fh:
            try:
                actual = sha256_stream(fh)
            except OSError as exc:
                raise damaged_export(folder, f"{name} cannot be read: {exc}") from exc
        if actual != expected:
            raise damaged_export(folder, f"{name}'s sha256 differs from the manifest's")
    return manifest


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
