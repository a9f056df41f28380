"""The model manager: a catalog of supported CLIP models, downloads and imported weights.

Everything lives in clipdesk's own models folder (``CLIPDESK_MODELS_DIR``, or the user data
folder): verified downloads under ``downloads/``, imported checkpoints under ``imported/``,
and ``manifest.json``, which records each installed model with its size, sha256 and model
key, so that nothing re-hashes large files at start-up.

Downloads take huggingface_hub's settings, as open_clip's own do (endpoint, ``HF_ENDPOINT``,
token, offline switch; proxies from the environment), and fetch with the standard library's
HTTP client (huggingface_hub's transport is its own business) into a ``.part`` file that a
later run resumes; they are verified against the sha256 the hub serves as the file's ETag
before they count as installed.

torch, open_clip and huggingface_hub are imported inside functions: importing this module and
listing the catalog are cheap.
"""

from __future__ import annotations

import atexit
import hashlib
import http.client
import importlib.util
import json
import os
import re
import shutil
import socket
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import urljoin, urlparse

from clipdesk import __version__
from clipdesk.errors import ClipdeskError, ModelUnavailableError
from clipdesk.files import file_lock
from clipdesk.progress import CancelToken
from clipdesk.spec import WEIGHT_SUFFIXES, ModelSpec, file_weights, model_key

MODELS_ENV = "CLIPDESK_MODELS_DIR"
MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1
CHUNK_SIZE = 1 << 20  # progress and cancel granularity of a download
MAX_DROPS = 5  # connection drops survived in one download, each resumed with a Range
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
SAFETENSORS_NAME = "open_clip_model.safetensors"  # open_clip's preferred file name ...
TORCH_NAME = "open_clip_pytorch_model.bin"  # ... and its fallback, as open_clip tries them

ProgressCallback = Callable[[int, int], None]


class DownloadCancelled(ClipdeskError):
    """A download stopped by its cancel token; the partial file is kept for a resume."""


def default_models_dir() -> Path:
    env = os.environ.get(MODELS_ENV)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("clipdesk", appauthor=False)) / "models"


def no_network_message(what: str, reason: str = "no network") -> str:
    """The one message for a model that cannot be fetched (CLI, encoder and GUI alike):
    for a catalog model, which file to get from where, and the import command that takes it."""
    entry = next((e for e in CATALOG if e.spec in what or what.split(" ", 1)[0] == e.name), None)
    if entry is None:
        return (
            f"could not download {what}: {reason}; import a weights file with "
            "`clipdesk models import --name NAME --arch ARCH --weights FILE` (or connect and "
            "run `clipdesk models download NAME`)"
        )
    return (
        f"could not download {what}: {reason}. On a computer with network, get "
        f"{' or '.join(entry.files)} from https://huggingface.co/{entry.hf_repo}/tree/"
        f"{entry.revision}, then `clipdesk models import --name {entry.name} --arch "
        f"{entry.arch} --weights FILE` (or connect and run `clipdesk models download "
        f"{entry.name}`)"
    )


@dataclass(frozen=True)
class CatalogEntry:
    """A supported pretrained model: where open_clip publishes it and what it offers."""

    name: str
    arch: str
    pretrained: str
    hf_repo: str
    size_bytes: int  # approximate download size
    dim: int
    imagenet_top1: float | None
    relative_speed: float  # photos/s relative to the default model on the same machine
    languages: str
    description: str
    files: tuple[str, ...] = (SAFETENSORS_NAME, TORCH_NAME)
    revision: str = "main"
    sha256: str | None = None  # pinned checksum when known; otherwise the hub's ETag
    requires: tuple[str, ...] = ()  # Python packages open_clip needs for this model
    # Files open_clip/transformers fetch at first load (tokenizer, text config), which a
    # download puts in huggingface_hub's cache so the model then loads offline.
    extra_files: tuple[tuple[str, str], ...] = ()

    @property
    def spec(self) -> str:
        return f"{self.arch}:{self.pretrained}"


# Facts from open_clip: hf repos from open_clip.get_pretrained_cfg (pretrained.py), dims from
# model_configs/*.json (embed_dim), ImageNet-1k zero-shot top-1 from open_clip's
# docs/openclip_results.csv, except MobileCLIP-S1 (not in that table): 72.6% from the
# MobileCLIP paper (Vasu et al., CVPR 2024, table 1). Sizes: parameter count (same sources)
# times 4 bytes (fp32 checkpoints), rounded. Speeds are rough image-tower estimates from
# published FLOPs/latency; `bench/` measures the real figure on a given machine.
CATALOG: tuple[CatalogEntry, ...] = (
    CatalogEntry(
        name="vit-b-32",
        arch="ViT-B-32",
        pretrained="laion2b_s34b_b79k",
        hf_repo="laion/CLIP-ViT-B-32-laion2B-s34B-b79K",
        size_bytes=605_000_000,
        dim=512,
        imagenet_top1=0.6656,
        relative_speed=1.0,
        languages="English",
        description="default: good balance of speed and quality (LAION-2B)",
    ),
    CatalogEntry(
        name="vit-b-32-openai",
        arch="ViT-B-32",
        pretrained="openai",
        hf_repo="timm/vit_base_patch32_clip_224.openai",
        size_bytes=605_000_000,
        dim=512,
        imagenet_top1=0.6332,
        relative_speed=1.0,
        languages="English",
        description="OpenAI's original CLIP ViT-B/32",
    ),
    CatalogEntry(
        name="vit-b-16",
        arch="ViT-B-16",
        pretrained="datacomp_xl_s13b_b90k",
        hf_repo="laion/CLIP-ViT-B-16-DataComp.XL-s13B-b90K",
        size_bytes=599_000_000,
        dim=512,
        imagenet_top1=0.7349,
        relative_speed=0.3,
        languages="English",
        description="more accurate, about 3x slower to index (DataComp-XL)",
    ),
    CatalogEntry(
        name="mobileclip-s1",
        arch="MobileCLIP-S1",
        pretrained="datacompdr",
        hf_repo="apple/MobileCLIP-S1-OpenCLIP",
        size_bytes=340_000_000,
        dim=512,
        imagenet_top1=0.726,
        relative_speed=1.2,
        languages="English",
        description="small and fast (Apple MobileCLIP), for laptops without a GPU",
    ),
    CatalogEntry(
        name="multilingual-b-32",
        arch="xlm-roberta-base-ViT-B-32",
        pretrained="laion5b_s13b_b90k",
        hf_repo="laion/CLIP-ViT-B-32-xlm-roberta-base-laion5B-s13B-b90k",
        size_bytes=1_465_000_000,
        dim=512,
        imagenet_top1=0.6236,
        relative_speed=1.0,
        languages="multilingual (about 100 languages, XLM-RoBERTa)",
        description="search in languages other than English",
        requires=("transformers",),
        extra_files=tuple(
            ("xlm-roberta-base", f)
            for f in ("config.json", "tokenizer.json", "tokenizer_config.json")
        ),
    ),
)
DEFAULT_NAME = "vit-b-32"


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
        }


@dataclass
class _Manifest:
    models: dict[str, dict[str, Any]] = field(default_factory=dict)


def catalog_entry(name_or_spec: str) -> CatalogEntry | None:
    """The catalog model called ``name_or_spec``, by name or by its ``ARCH:TAG`` spec."""
    for entry in CATALOG:
        if name_or_spec in (entry.name, entry.spec):
            return entry
    return None


def pretrained_overrides(arch: str, pretrained: str) -> dict[str, Any]:
    """What ``open_clip.create_model(arch, pretrained=TAG)`` takes from the tag's config,
    for building the same model from a local file: QuickGELU (OpenAI weights) and the
    image preprocessing (MobileCLIP and SigLIP do not use CLIP's mean and std)."""
    import open_clip

    cfg = open_clip.get_pretrained_cfg(arch, pretrained) or {}
    preprocess = {k: cfg[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in cfg}
    return {
        "force_quick_gelu": bool(cfg.get("quick_gelu", False)),
        "force_preprocess_cfg": preprocess,
    }


def create_pretrained_model(arch: str, pretrained: str, weights: Path) -> Any:
    """open_clip's model for ``arch:pretrained`` with its weights read from a local file."""
    import open_clip

    try:
        return open_clip.create_model(
            arch,
            pretrained=str(weights),
            weights_only=True,
            **pretrained_overrides(arch, pretrained),
        )
    except Exception as exc:
        raise ModelUnavailableError(
            f"cannot load weights {weights} into {arch}: {type(exc).__name__}: {str(exc)[:300]}"
        ) from exc


def hub_reachable(endpoint: str | None = None, timeout: float = 3.0) -> bool:
    """Whether the model hub (``endpoint``, else huggingface_hub's, which honours
    HF_ENDPOINT) answers at all: a fast answer offline instead of a minute of retries.
    False in huggingface_hub's offline mode (HF_HUB_OFFLINE)."""
    from huggingface_hub import constants

    if constants.is_offline_mode():
        return False
    url = urlparse(endpoint or str(constants.ENDPOINT))
    port = url.port or (80 if url.scheme == "http" else 443)
    try:
        with socket.create_connection((url.hostname or "huggingface.co", port), timeout):
            return True
    except OSError:
        return False


_config_lock = threading.Lock()
_config_dir: Path | None = None


def register_config(spec: ModelSpec) -> str:
    """Make a custom architecture known to open_clip; returns the name to create it by."""
    import open_clip

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
        for entry in CATALOG:
            record = self._installed_record(manifest, entry.name)
            infos.append(
                ModelInfo(
                    name=entry.name,
                    arch=entry.arch,
                    pretrained=entry.pretrained,
                    size_bytes=record["size"] if record else entry.size_bytes,
                    dim=entry.dim,
                    imagenet_top1=entry.imagenet_top1,
                    relative_speed=entry.relative_speed,
                    languages=entry.languages,
                    installed=record is not None,
                    kind="catalog",
                    description=entry.description,
                    default=entry.name == DEFAULT_NAME,
                    path=self.models_dir / record["file"] if record else None,
                    key=entry.spec,
                    requires=entry.requires,
                )
            )
        for name, record in sorted(manifest.models.items()):
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

    def _installed_record(self, manifest: _Manifest, name: str) -> dict[str, Any] | None:
        record = manifest.models.get(name)
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

    def _read_manifest(self) -> _Manifest:
        try:
            data = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return _Manifest()
        except (OSError, ValueError) as exc:
            raise ModelUnavailableError(
                f"the models manifest {self.manifest_path} cannot be read ({exc}); move it "
                "aside and download or import the models again"
            ) from exc
        models = data.get("models") if isinstance(data, dict) else None
        return _Manifest(dict(models) if isinstance(models, dict) else {})

    def _record(self, name: str, record: dict[str, Any]) -> None:
        """Add one model to the manifest (read again first, written atomically)."""
        with self._lock:
            manifest = self._read_manifest()
            manifest.models[name] = record
            payload = json.dumps(
                {"version": MANIFEST_VERSION, "models": manifest.models}, indent=1, sort_keys=True
            )
            _atomic_write(self.manifest_path, payload.encode("utf-8"))

    # -- downloads -------------------------------------------------------------------------

    def download(
        self,
        name: str,
        progress: ProgressCallback | None = None,
        cancel: CancelToken | None = None,
    ) -> ModelSpec:
        """Download a catalog model (by name or ``ARCH:TAG``), resuming a partial download,
        and verify its sha256; returns its spec. Already installed: returns at once."""
        entry = catalog_entry(name)
        if entry is None:
            known = ", ".join(e.name for e in CATALOG)
            raise ModelUnavailableError(
                f"unknown model {name!r}: the catalog has {known} (see `clipdesk models list`)"
            )
        if (spec := self.spec_for(entry.name)) is not None:
            return spec
        missing = [p for p in entry.requires if importlib.util.find_spec(p) is None]
        if missing:
            raise ModelUnavailableError(
                f"{entry.name} needs the Python package(s) {', '.join(missing)}: "
                f"pip install {' '.join(missing)}"
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
            filename, url, sha256, size = self._locate(entry)
            target = folder / filename
            part = folder / f"{filename}.{sha256[:16]}.part"
            for stale in folder.glob("*.part"):
                if stale != part:  # from another version of the file: useless for a resume
                    stale.unlink(missing_ok=True)
            self._fetch(url, part, size, entry.name, progress, cancel)
            actual = sha256_file(part)
            if actual != sha256:
                part.unlink(missing_ok=True)
                raise ModelUnavailableError(
                    f"the download of {entry.name} ({filename}) failed its checksum: expected "
                    f"sha256 {sha256}, got {actual}. The file was deleted and nothing was "
                    "installed; run the download again (a proxy or mirror may be corrupting it)"
                )
            os.replace(part, target)
            self._fetch_extra_files(entry)
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

    def _locate(self, entry: CatalogEntry) -> tuple[str, str, str, int]:
        """The file to fetch for ``entry``: (file name, URL, sha256, size), from a HEAD
        request; the safetensors file first, then open_clip's fallback, as open_clip does."""
        from huggingface_hub import constants, hf_hub_url

        what = f"{entry.name} ({entry.spec})"
        if constants.is_offline_mode():
            raise ModelUnavailableError(
                no_network_message(what, "no network (HF_HUB_OFFLINE is set)")
            )
        last_error: Exception | None = None
        for filename in entry.files:
            url = hf_hub_url(
                entry.hf_repo, filename, revision=entry.revision, endpoint=self.endpoint
            )
            try:
                meta = _file_metadata(url, float(constants.HF_HUB_ETAG_TIMEOUT))
            except urllib.error.HTTPError as exc:
                if exc.code == 404:
                    last_error = exc
                    continue  # not published under this name: try the next one
                raise ModelUnavailableError(
                    f"could not download {what}: the server at {_host(url)} answered "
                    f"{exc.code} {exc.reason}"
                ) from exc
            except Exception as exc:
                if _is_network_error(exc):
                    raise ModelUnavailableError(no_network_message(what)) from exc
                raise
            etag = (meta.etag or "").lower()
            sha256 = entry.sha256 or (etag if SHA256_HEX.match(etag) else None)
            if sha256 is None:
                raise ModelUnavailableError(
                    f"could not download {what}: the server at {_host(url)} gives no sha256 "
                    f"for {filename}, so the download could not be verified"
                )
            if entry.sha256 and SHA256_HEX.match(etag) and etag != entry.sha256:
                raise ModelUnavailableError(
                    f"could not download {what}: the server at {_host(url)} offers a different "
                    f"file than the catalog's (sha256 {etag}, expected {entry.sha256})"
                )
            if meta.size is None:
                raise ModelUnavailableError(
                    f"could not download {what}: the server at {_host(url)} gives no size "
                    f"for {filename}"
                )
            return filename, url, sha256, int(meta.size)
        raise ModelUnavailableError(
            f"could not download {what}: {entry.hf_repo} has none of {', '.join(entry.files)} "
            f"({_first_line(last_error) if last_error else 'not found'})"
        )

    def _fetch(
        self,
        url: str,
        part: Path,
        size: int,
        name: str,
        progress: ProgressCallback | None,
        cancel: CancelToken,
    ) -> None:
        """Fill ``part`` up to ``size`` bytes from ``url``, resuming from what it holds."""
        from huggingface_hub import constants

        done = part.stat().st_size if part.exists() else 0
        if done > size:
            part.unlink()
            done = 0
        free = shutil.disk_usage(part.parent).free
        if free < size - done:
            raise ModelUnavailableError(
                f"not enough disk space for {name}: it needs {_mb(size - done)} more, "
                f"{part.parent} has {_mb(free)} free"
            )
        if constants.is_offline_mode():
            raise ModelUnavailableError(
                no_network_message(name, "no network (HF_HUB_OFFLINE is set)")
            )
        drops = 0
        while done < size:
            headers = _hub_headers()
            headers["Accept-Encoding"] = "identity"  # byte ranges of the file, not of a gzip
            if done:
                headers["Range"] = f"bytes={done}-"
            request = urllib.request.Request(url, headers=headers)
            try:
                with _OPENER.open(request, timeout=float(constants.HF_HUB_DOWNLOAD_TIMEOUT)) as (
                    response
                ):
                    mode = "ab"
                    if done and response.status != 206:
                        done, mode = 0, "wb"  # the server ignored the Range: start over
                    with open(part, mode) as fh:
                        if progress is not None:
                            progress(done, size)
                        for chunk in iter(lambda: response.read(CHUNK_SIZE), b""):
                            if done + len(chunk) > size:
                                chunk = chunk[: size - done]  # more than advertised: never used
                            fh.write(chunk)
                            done += len(chunk)
                            if progress is not None:
                                progress(done, size)
                            if cancel.cancelled:
                                raise DownloadCancelled(
                                    f"download of {name} stopped at {done} of {size} bytes; run "
                                    "it again to resume"
                                )
                            if done >= size:
                                break
            except urllib.error.HTTPError as exc:
                raise ModelUnavailableError(
                    f"could not download {name}: the server at {_host(url)} answered "
                    f"{exc.code} {exc.reason}; run the download again to resume"
                ) from exc
            except ClipdeskError:
                raise
            except Exception as exc:
                if not _is_network_error(exc):
                    if isinstance(exc, OSError):
                        raise ModelUnavailableError(
                            f"cannot write {part}: {exc.strerror or exc}"
                        ) from exc
                    raise
                drops += 1
                if drops > MAX_DROPS:
                    raise ModelUnavailableError(
                        no_network_message(
                            name,
                            f"the connection kept dropping ({done} of {size} bytes kept; run "
                            "the download again to resume)",
                        )
                    ) from exc
                time.sleep(min(0.2 * drops, 2.0))  # then resume with a Range from `done`
                continue
            if done < size:  # a clean end of the body, but short: resume
                drops += 1
                if drops > MAX_DROPS:
                    raise ModelUnavailableError(
                        f"could not download {name}: the server at {_host(url)} keeps sending "
                        f"less than the {size} bytes it announced"
                    )

    def _fetch_extra_files(self, entry: CatalogEntry) -> None:
        if not entry.extra_files:
            return
        from huggingface_hub import hf_hub_download

        for repo, filename in entry.extra_files:
            try:
                hf_hub_download(repo, filename, endpoint=self.endpoint)
            except Exception as exc:
                raise ModelUnavailableError(
                    f"{entry.name}: the weights are downloaded, but its tokenizer file "
                    f"{repo}/{filename} could not be: {_first_line(exc)}; run the download "
                    "again"
                ) from exc

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
        import open_clip

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
            if name in manifest.models and self._installed_record(manifest, name) is not None:
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
                _check_plain_weights(target, shown=weights)
                probe = ModelSpec(arch, str(target), config_json)
                registered = register_config(probe)
                dim = _check_fits(open_clip, registered, target, shown=weights, arch=arch)
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
        records = ModelStore(models_dir)._read_manifest().models
    except ClipdeskError:
        return None
    for name, record in sorted(records.items()):
        if isinstance(record, dict) and record.get("key") == key:
            return name
    return None


# -- helpers -------------------------------------------------------------------------------


def _mb(size: int) -> str:
    return f"{size / 1e6:.0f} MB"


def _host(url: str) -> str:
    parsed = urlparse(url)
    return parsed.netloc or url


def _first_line(exc: BaseException | None) -> str:
    text = str(exc) if exc is not None else ""
    lines = [line for line in text.splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__)[:200]


def _is_network_error(exc: BaseException) -> bool:
    """Connection refused, DNS failure, timeout or a dropped connection."""
    if isinstance(exc, urllib.error.HTTPError):
        return False  # the server answered
    return isinstance(
        exc, urllib.error.URLError | http.client.HTTPException | ConnectionError | TimeoutError
    )


def _hub_headers() -> dict[str, str]:
    """What the hub wants to see: who asks, and the user's token (huggingface_hub's own
    login, HF_TOKEN) where there is one."""
    from huggingface_hub import get_token

    headers = {"User-Agent": f"clipdesk/{__version__}"}
    token = get_token()
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


class _Redirects(urllib.request.HTTPRedirectHandler):
    """Redirects as huggingface_hub takes them: a HEAD follows only those on the same
    host (a renamed repository), since the hub's answer carries the file's sha256 and
    size; a GET follows to the CDN, without the token."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> urllib.request.Request | None:
        here, there = urlparse(req.full_url), urlparse(urljoin(req.full_url, newurl))
        if there.scheme not in ("http", "https") or (here.scheme, there.scheme) == (
            "https",
            "http",
        ):
            return None  # no downgrade from https, no other protocol: the 3xx is an error
        same_host = (there.scheme, there.netloc) == (here.scheme, here.netloc)
        if req.get_method() == "HEAD" and not same_host:
            return None  # the redirect's own headers are the answer
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and req.get_method() == "HEAD":
            new.method = "HEAD"
        if new is not None and not same_host:
            new.remove_header("Authorization")
        return new


_OPENER = urllib.request.build_opener(_Redirects)


@dataclass(frozen=True)
class _FileMetadata:
    etag: str | None
    size: int | None


def _file_metadata(url: str, timeout: float) -> _FileMetadata:
    """The hub's HEAD answer for a file: its ETag (an LFS file's sha256) and size."""
    request = urllib.request.Request(url, headers=_hub_headers(), method="HEAD")
    request.add_header("Accept-Encoding", "identity")
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            headers = response.headers
    except urllib.error.HTTPError as exc:
        if not 300 <= exc.code < 400:
            raise
        headers = exc.headers  # a redirect to the CDN: the hub's headers are the answer
    etag = headers.get("X-Linked-Etag") or headers.get("ETag")
    size = headers.get("X-Linked-Size") or headers.get("Content-Length")
    return _FileMetadata(
        etag.removeprefix("W/").strip('"') if etag else None,
        int(size) if size and size.isdigit() else None,
    )


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK_SIZE), b""):
            digest.update(chunk)
    return digest.hexdigest()


def copy_hashing(src: IO[bytes], out: IO[bytes]) -> str:
    digest = hashlib.sha256()
    for chunk in iter(lambda: src.read(CHUNK_SIZE), b""):
        digest.update(chunk)
        out.write(chunk)
    out.flush()
    os.fsync(out.fileno())
    return digest.hexdigest()


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def _folder_lock(folder: Path, name: str) -> Iterator[None]:
    """One download of a model at a time, across processes (they would share a .part)."""
    busy = ModelUnavailableError(f"{name} is already being downloaded by another process")
    with file_lock(folder / ".lock", busy):
        yield


def _check_plain_weights(path: Path, shown: Path) -> None:
    """Refuse a checkpoint that needs code to load: only tensors, never a pickle's objects."""
    if path.name.lower().endswith(".safetensors"):
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as fh:
                fh.keys()
        except Exception as exc:
            raise ModelUnavailableError(
                f"{shown} is not a valid safetensors file: {_first_line(exc)}"
            ) from exc
        return
    import pickle

    import torch

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
            f"{shown} cannot be read as torch weights: {_first_line(exc)}"
        ) from exc


def _pickle_culprit(exc: BaseException) -> str:
    match = re.search(r"GLOBAL ([\w.]+)", str(exc)) or re.search(r"global ([\w.]+)", str(exc))
    return match.group(1) if match else "objects that are not tensors"


def _check_fits(open_clip: Any, registered: str, path: Path, shown: Path, arch: str) -> int:
    """Build the architecture and load the weights into it; returns the embedding size."""
    try:
        model = open_clip.create_model(registered, pretrained=None)
        open_clip.load_checkpoint(model, str(path), weights_only=True)
    except Exception as exc:
        raise ModelUnavailableError(
            f"{shown} does not fit the architecture {arch}: {type(exc).__name__}: "
            f"{_first_line(exc)}"
        ) from exc
    projection = getattr(model, "text_projection", None)
    config = open_clip.get_model_config(registered) or {}
    dim = config.get("embed_dim")
    if dim is None and projection is not None:
        dim = int(projection.shape[-1])
    return int(dim) if dim is not None else 0
