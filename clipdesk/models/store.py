"""The models folder: what is installed, downloads and imports.

Everything lives in clipdesk's own models folder (``CLIPDESK_MODELS_DIR``, or the user data
folder): verified downloads under ``downloads/``, imported checkpoints under ``imported/``,
and ``manifest.json``, which records each installed model with its size, sha256 and model
key, so that nothing re-hashes large files at start-up. What the catalog offers is
:mod:`clipdesk.models.catalog`; fetching from the hub, :mod:`clipdesk.models.hub`.

torch, open_clip and huggingface_hub are imported inside functions: importing this module and
listing the catalog are cheap.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

from clipdesk.errors import ClipdeskError, ModelUnavailableError
from clipdesk.files import atomic_write, copy_hashing, file_lock, sha256_file
from clipdesk.models import catalog
from clipdesk.models.catalog import (
    DEFAULT_NAME,
    MULTILINGUAL_EXTRA,
    CatalogEntry,
    catalog_entry,
    license_notice,
    relative_speed,
)
from clipdesk.models.hub import (
    ProgressCallback,
    fetch,
    fetch_extra_files,
    hub_reachable,
    locate,
)
from clipdesk.models.loading import check_fits, check_plain_weights, register_config
from clipdesk.progress import CancelToken
from clipdesk.spec import WEIGHT_SUFFIXES, ModelSpec, file_weights, model_key

MODELS_ENV = "CLIPDESK_MODELS_DIR"
MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def default_models_dir() -> Path:
    env = os.environ.get(MODELS_ENV)
    if env:
        return Path(env).expanduser()
    import platformdirs  # 10 ms, needed only where CLIPDESK_MODELS_DIR is not set

    return Path(platformdirs.user_data_dir("clipdesk", appauthor=False)) / "models"


class ModelRecord(TypedDict):
    """One installed model in ``manifest.json``."""

    kind: str  # "catalog" (downloaded, or its file imported by hand) or "imported"
    arch: str
    pretrained: str | None
    file: str  # relative to the models folder, with "/"
    size: int
    sha256: str
    key: str
    config_json: str | None
    dim: int | None
    source: str  # the URL or the file it came from
    installed_at: float


@dataclass(frozen=True)
class ModelInfo:
    """One line of ``clipdesk models list``: a catalog model or an imported one."""

    name: str
    arch: str
    pretrained: str | None  # the open_clip tag; None for an imported file
    size_bytes: int | None
    dim: int | None
    imagenet_top1: float | None
    relative_speed: float | None
    languages: str
    installed: bool
    kind: str  # "catalog" or "imported"
    description: str = ""
    default: bool = False
    path: Path | None = None
    key: str | None = None
    requires: tuple[str, ...] = ()
    license: str = ""  # SPDX id or name; "" for an imported file (its own, unknown here)
    license_url: str = ""
    research_only: bool = False  # downloaded only after the license is acknowledged

    @property
    def spec(self) -> str:
        return f"{self.arch}:{self.pretrained}" if self.pretrained else self.name

    def as_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "spec": self.spec,
            "kind": self.kind,
            "arch": self.arch,
            "pretrained": self.pretrained,
            "installed": self.installed,
            "default": self.default,
            "size_bytes": self.size_bytes,
            "dim": self.dim,
            "imagenet_top1": self.imagenet_top1,
            "relative_speed": self.relative_speed,
            "languages": self.languages,
            "description": self.description,
            "path": str(self.path) if self.path else None,
            "key": self.key,
            "requires": list(self.requires),
            "license": self.license or None,
            "license_url": self.license_url or None,
            "research_only": self.research_only,
        }


def read_manifest(models_dir: Path) -> dict[str, ModelRecord]:
    """The installed models recorded in ``models_dir``'s manifest (none when it has none)."""
    path = models_dir / MANIFEST_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ModelUnavailableError(
            f"the models manifest {path} cannot be read ({exc}); move it "
            "aside and download or import the models again"
        ) from exc
    models = data.get("models") if isinstance(data, dict) else None
    return dict(models) if isinstance(models, dict) else {}


class LicenseNotAccepted(ModelUnavailableError):
    """A research-only model's download, asked for without acknowledging its license."""

    def __init__(self, entry: CatalogEntry) -> None:
        super().__init__(
            f"{license_notice(entry)}. Download it only if that is how you will use it, "
            "by acknowledging the license: "
            f"`clipdesk models download {entry.name} --accept-license`"
        )
        self.entry = entry


class ModelStore:
    """The models folder: what is installed, downloads and imports.

    Safe to share between threads (one download or import at a time per store); services
    and the GUI call it, it never prints.
    """

    def __init__(self, models_dir: Path | None = None, endpoint: str | None = None) -> None:
        self.models_dir = Path(models_dir).expanduser() if models_dir else default_models_dir()
        # None: huggingface_hub's own default, which honours HF_ENDPOINT.
        self.endpoint = endpoint.rstrip("/") if endpoint else None
        self._lock = threading.RLock()

    @property
    def manifest_path(self) -> Path:
        return self.models_dir / MANIFEST_NAME

    def reachable(self, timeout: float = 3.0) -> bool:
        """Whether the hub (or mirror) answers at all: a fast answer offline."""
        return hub_reachable(self.endpoint, timeout)

    # -- what is there ---------------------------------------------------------------------

    def available(self) -> list[ModelInfo]:
        """The catalog, then imported models, each marked installed or not."""
        manifest = self._read_manifest()
        infos = []
        for entry in catalog.CATALOG:
            record = self._installed_record(manifest, entry.name)
            infos.append(
                ModelInfo(
                    name=entry.name,
                    arch=entry.arch,
                    pretrained=entry.pretrained,
                    size_bytes=record["size"] if record else entry.size_bytes,
                    dim=entry.dim,
                    imagenet_top1=entry.imagenet_top1,
                    relative_speed=relative_speed(entry),
                    languages=entry.languages,
                    installed=record is not None,
                    kind="catalog",
                    description=entry.description,
                    default=entry.name == DEFAULT_NAME,
                    path=self.models_dir / record["file"] if record else None,
                    key=entry.spec,
                    requires=entry.requires,
                    license=entry.license,
                    license_url=entry.license_url,
                    research_only=entry.research_only,
                )
            )
        for name, record in sorted(manifest.items()):
            if record.get("kind") != "imported":
                continue
            installed = self._installed_record(manifest, name) is not None
            infos.append(
                ModelInfo(
                    name=name,
                    arch=record["arch"],
                    pretrained=None,
                    size_bytes=record["size"],
                    dim=record.get("dim"),
                    imagenet_top1=None,
                    relative_speed=None,
                    languages="unknown",
                    installed=installed,
                    kind="imported",
                    description=f"imported from {record.get('source', '?')}",
                    path=self.models_dir / record["file"],
                    key=record["key"],
                )
            )
        return infos

    def spec_for(self, name_or_spec: str) -> ModelSpec | None:
        """The installed model called ``name_or_spec`` (a catalog or import name, or a
        catalog ``ARCH:TAG``) as a spec with its local weights file; None if not installed."""
        manifest = self._read_manifest()
        entry = catalog_entry(name_or_spec)
        name = entry.name if entry else name_or_spec
        record = self._installed_record(manifest, name)
        if record is None:
            return None
        return ModelSpec(
            record["arch"],
            str(self.models_dir / record["file"]),
            record.get("config_json"),
            known_key=record["key"],
        )

    def _installed_record(self, manifest: dict[str, ModelRecord], name: str) -> ModelRecord | None:
        record = manifest.get(name)
        if record is None:
            return None
        path = self.models_dir / record["file"]
        try:
            # A size check only: the sha256 was verified once, when the file was installed.
            if path.stat().st_size != record["size"]:
                return None
        except OSError:
            return None
        return record

    # -- manifest --------------------------------------------------------------------------

    def _read_manifest(self) -> dict[str, ModelRecord]:
        return read_manifest(self.models_dir)

    def _record(self, name: str, record: ModelRecord) -> None:
        """Add one model to the manifest (read again first, written atomically)."""
        with self._lock:
            models = self._read_manifest()
            models[name] = record
            payload = json.dumps(
                {"version": MANIFEST_VERSION, "models": models}, indent=1, sort_keys=True
            )
            atomic_write(self.manifest_path, payload.encode("utf-8"))

    # -- downloads -------------------------------------------------------------------------

    def download(
        self,
        name: str,
        progress: ProgressCallback | None = None,
        cancel: CancelToken | None = None,
        accept_license: bool = False,
    ) -> ModelSpec:
        """Download a catalog model (by name or ``ARCH:TAG``), resuming a partial download,
        and verify its sha256; returns its spec. Already installed: returns at once.
        Weights for research only need ``accept_license``: the person acknowledged it."""
        entry = catalog_entry(name)
        if entry is None:
            known = ", ".join(e.name for e in catalog.CATALOG)
            raise ModelUnavailableError(
                f"unknown model {name!r}: the catalog has {known} (see `clipdesk models list`)"
            )
        if (spec := self.spec_for(entry.name)) is not None:
            return spec
        if entry.research_only and not accept_license:
            raise LicenseNotAccepted(entry)
        missing = [p for p in entry.requires if importlib.util.find_spec(p) is None]
        if missing:
            raise ModelUnavailableError(
                f"{entry.name} needs the Python package(s) {', '.join(missing)}, which "
                f"clipdesk's '{MULTILINGUAL_EXTRA}' extra installs: pip install "
                f"'clipdesk[{MULTILINGUAL_EXTRA}]' (or pip install {' '.join(missing)})"
            )
        cancel = cancel or CancelToken()
        folder = self.models_dir / "downloads" / entry.name
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ModelUnavailableError(
                f"cannot create the models folder {folder}: {exc.strerror or exc}"
            ) from exc
        with self._lock, _folder_lock(folder, entry.name):
            filename, url, sha256, size = locate(entry, self.endpoint)
            target = folder / filename
            part = folder / f"{filename}.{sha256[:16]}.part"
            for stale in folder.glob("*.part"):
                if stale != part:  # from another version of the file: useless for a resume
                    stale.unlink(missing_ok=True)
            fetch(url, part, size, entry.name, progress, cancel)
            actual = sha256_file(part)
            if actual != sha256:
                part.unlink(missing_ok=True)
                raise ModelUnavailableError(
                    f"the download of {entry.name} ({filename}) failed its checksum: expected "
                    f"sha256 {sha256}, got {actual}. The file was deleted and nothing was "
                    "installed; run the download again (a proxy or mirror may be corrupting it)"
                )
            os.replace(part, target)
            fetch_extra_files(entry, self.endpoint)
            self._record(
                entry.name,
                {
                    "kind": "catalog",
                    "arch": entry.arch,
                    "pretrained": entry.pretrained,
                    "file": target.relative_to(self.models_dir).as_posix(),
                    "size": size,
                    "sha256": sha256,
                    "key": model_key(entry.arch, None, entry.pretrained),
                    "config_json": None,
                    "dim": entry.dim,
                    "source": url,
                    "installed_at": time.time(),
                },
            )
        spec = self.spec_for(entry.name)
        assert spec is not None
        return spec

    # -- imports ---------------------------------------------------------------------------

    def import_model(
        self,
        name: str,
        weights: Path,
        config: Path | None = None,
        arch: str | None = None,
    ) -> ModelSpec:
        """Register a local checkpoint under ``name``: it is copied into the models folder
        (the user's file is only read), must load without running code, and must fit the
        architecture: ``arch`` (an open_clip name), or the config's file stem."""
        import open_clip  # not in the CPU bundle; seconds to import (torch)

        if not SAFE_NAME.match(name):
            raise ModelUnavailableError(
                f"model name {name!r}: use letters, digits, '.', '_' or '-' (64 at most)"
            )
        # Under a catalog name: that model's weights fetched by hand (the offline way that
        # no_network_message describes), installed as if downloaded.
        entry = catalog_entry(name)
        if entry is not None:
            arch = _catalog_import_arch(entry, arch, config)
        weights = Path(weights).expanduser()
        if not weights.is_file():
            raise ModelUnavailableError(f"weights file not found: {weights}")
        if not weights.name.lower().endswith(WEIGHT_SUFFIXES):
            raise ModelUnavailableError(
                f"{weights} is not a weights file clipdesk can read: use "
                + ", ".join(WEIGHT_SUFFIXES)
            )
        config_json = None
        if config is not None:
            config = Path(config).expanduser()
            arch = arch or config.stem
            config_json = ModelSpec.parse(f"{arch}:random", config).config_json
        elif arch is None:
            raise ModelUnavailableError(
                "say which architecture the weights are for: --arch ARCH (an open_clip model "
                "name such as ViT-B-32) or --config FILE.json"
            )
        elif arch not in open_clip.list_models():
            raise ModelUnavailableError(
                f"unknown model architecture {arch!r}; pass --config FILE.json for a custom one"
            )
        with self._lock:
            manifest = self._read_manifest()
            if name in manifest and self._installed_record(manifest, name) is not None:
                raise ModelUnavailableError(
                    f"a model named {name!r} is already installed: choose another name"
                )
            folder = self.models_dir / ("downloads" if entry else "imported") / name
            try:
                folder.mkdir(parents=True, exist_ok=True)
                # Copy first, then check the copy: what is checked is what gets used.
                fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=".import-", suffix=".part")
                tmp = Path(tmp_name)
            except OSError as exc:
                raise ModelUnavailableError(
                    f"cannot write to the models folder {self.models_dir}: {exc.strerror or exc}"
                ) from exc
            try:
                try:
                    with os.fdopen(fd, "wb") as out, open(weights, "rb") as src:
                        digest = copy_hashing(src, out)
                except OSError as exc:
                    raise ModelUnavailableError(
                        f"cannot copy {weights} into the models folder: {exc.strerror or exc}"
                    ) from exc
                target = folder / weights.name
                # Checked under the final name: open_clip picks the loader by its suffix.
                os.replace(tmp, target)
                tmp = target
                check_plain_weights(target, shown=weights)
                probe = ModelSpec(arch, str(target), config_json)
                registered = register_config(probe)
                dim = check_fits(registered, target, shown=weights, arch=arch)
                if entry is not None and entry.sha256 is not None and digest != entry.sha256:
                    raise ModelUnavailableError(
                        f"{weights} is not {entry.name}'s weights file: its sha256 is {digest}, "
                        f"{entry.name}'s is {entry.sha256}"
                    )
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            self._record(
                name,
                {
                    "kind": "catalog" if entry else "imported",
                    "arch": arch,
                    "pretrained": entry.pretrained if entry else None,
                    "file": target.relative_to(self.models_dir).as_posix(),
                    "size": target.stat().st_size,
                    "sha256": digest,
                    "key": (
                        model_key(arch, None, entry.pretrained)
                        if entry
                        else model_key(arch, config_json, file_weights(digest))
                    ),
                    "config_json": config_json,
                    "dim": dim,
                    "source": str(weights.resolve()),
                    "installed_at": time.time(),
                },
            )
        spec = self.spec_for(name)
        assert spec is not None
        return spec


def _catalog_import_arch(entry: CatalogEntry, arch: str | None, config: Path | None) -> str:
    """The architecture of a catalog model's weights imported by hand: its own."""
    if config is not None or (arch is not None and arch != entry.arch):
        raise ModelUnavailableError(
            f"{entry.name} is {entry.arch} ({entry.spec}): import its weights with "
            f"--arch {entry.arch}, or choose another name for other weights"
        )
    if entry.extra_files:
        raise ModelUnavailableError(
            f"{entry.name} needs more than its weights file (its tokenizer files): download it "
            f"on a connected computer with `clipdesk models download {entry.name}`, or import "
            "the weights under another name"
        )
    return entry.arch


def display_name(spec: ModelSpec, models_dir: Path | None = None) -> str:
    """How a model is shown to people: an imported model by the name it was imported
    under, a downloaded catalog model by its ``ARCH:TAG``, anything else by its spec
    (never the path of a weights file in the models folder)."""
    name = name_for_key(spec.key, models_dir)
    if name is None:
        return spec.spec
    return name if catalog_entry(name) else f"{name} (imported {spec.arch})"


def name_for_key(key: str, models_dir: Path | None = None) -> str | None:
    """The name the model ``key`` goes by in the models folder: a catalog model's
    ``ARCH:TAG``, an imported model's own name; None for anything else."""
    if (entry := catalog_entry(key)) is not None:
        return entry.spec
    try:
        records = read_manifest(
            Path(models_dir).expanduser() if models_dir else default_models_dir()
        )
    except ClipdeskError:
        return None
    for name, record in sorted(records.items()):
        if isinstance(record, dict) and record.get("key") == key:
            return name
    return None


@contextmanager
def _folder_lock(folder: Path, name: str) -> Iterator[None]:
    """One download of a model at a time, across processes (they would share a .part)."""
    busy = ModelUnavailableError(f"{name} is already being downloaded by another process")
    with file_lock(folder / ".lock", busy):
        yield
