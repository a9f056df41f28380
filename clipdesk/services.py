"""The services the CLI and the GUI both call: index, search, similar, status.

Plain Python, no Qt, no printing. Long jobs are generators of :class:`Progress`.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sqlalchemy import func, select

from clipdesk import db
from clipdesk.embedding import DEFAULT_BATCH_SIZE, embed_pending
from clipdesk.encoder import DEFAULT_MODEL, ClipEncoder, ModelSpec
from clipdesk.errors import ClipdeskError, NotIndexedError
from clipdesk.imaging import DEFAULT_MAX_PIXELS, ImageRejected, load_rgb
from clipdesk.library import Library
from clipdesk.progress import CancelToken, Progress
from clipdesk.scanning import ScanReport, add_folders, normalise_folder, remove_folder, scan_folders
from clipdesk.vector_index import VectorIndex

MODEL_SETTING = "model_key"
DEVICE_SETTING = "device"
DEVICE_USED_SETTING = "device_used"


@dataclass(frozen=True)
class SearchHit:
    photo_id: int
    path: str
    score: float
    width: int | None
    height: int | None
    taken_at: float

    def as_json(self) -> dict[str, object]:
        return {
            "path": self.path,
            "score": round(self.score, 6),
            "id": self.photo_id,
            "width": self.width,
            "height": self.height,
            "taken_at": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(self.taken_at)),
        }


@dataclass
class FolderStatus:
    path: str
    photos: int
    indexed: int
    available: bool


@dataclass
class LibraryStatus:
    library: str
    photos: int
    indexed: int
    pending: int
    failed: list[tuple[str, str]]
    folders: list[FolderStatus]
    model: str | None
    model_key: str | None
    random_weights: bool
    device: str
    index_size: int | None = None
    extra: dict[str, str] = field(default_factory=dict)

    def as_json(self) -> dict[str, object]:
        return {
            "library": self.library,
            "photos": self.photos,
            "indexed": self.indexed,
            "pending": self.pending,
            "failed": [{"path": p, "reason": r} for p, r in self.failed],
            "folders": [vars(f) for f in self.folders],
            "model": self.model,
            "model_key": self.model_key,
            "random_weights": self.random_weights,
            "device": self.device,
        }


class Clipdesk:
    """One library and its (lazily loaded) model, shared by CLI commands and GUI workers."""

    def __init__(self, library: Library) -> None:
        self.library = library
        self._encoder: ClipEncoder | None = None
        self._index: VectorIndex | None = None
        self._lock = threading.RLock()  # guards model and index loading

    # -- folders -----------------------------------------------------------------------

    def add_folders(self, folders: list[str | Path]) -> list[str]:
        return add_folders(self.library, folders)

    def remove_folder(self, folder: str | Path) -> int:
        return remove_folder(self.library, folder)

    # -- model -------------------------------------------------------------------------

    def current_spec(self) -> ModelSpec | None:
        key = self.library.get_setting(MODEL_SETTING)
        if key is None:
            return None
        with self.library.session() as s:
            row = s.scalar(select(db.Model).where(db.Model.key == key))
        if row is None:
            return None
        arch, _, pretrained = row.spec.partition(":")
        return ModelSpec(arch, pretrained, row.config_json)

    def _model_row(self, spec: ModelSpec, dim: int) -> db.Model:
        with self.library.session() as s:
            row = s.scalar(select(db.Model).where(db.Model.key == spec.key))
            if row is None:
                row = db.Model(
                    key=spec.key,
                    spec=spec.spec,
                    dim=dim,
                    config_json=spec.config_json,
                    created_at=time.time(),
                )
                s.add(row)
                s.commit()
            return row

    def encoder(self, spec: ModelSpec | None = None, device: str | None = None) -> ClipEncoder:
        """The loaded model (loading it once, under a lock); ``spec`` defaults to the
        library's current model, then to clipdesk's default model."""
        with self._lock:
            spec = spec or self.current_spec() or ModelSpec.parse(DEFAULT_MODEL)
            device = device or self.library.get_setting(DEVICE_SETTING, "auto") or "auto"
            loaded = self._encoder
            if (
                loaded is None
                or loaded.spec.key != spec.key
                or (device != "auto" and loaded.device != device)
            ):
                self._encoder = None
                self._index = None
                loaded = ClipEncoder(spec, device, cache_dir=self.library.models_dir)
                self._encoder = loaded
                self.library.set_setting(DEVICE_USED_SETTING, loaded.device_reason)
            return loaded

    def unload_model(self) -> None:
        with self._lock:
            self._encoder = None

    def vector_index(self) -> VectorIndex:
        """The index of the library's current model. Needs no model loaded: a similar-photo
        search runs on stored vectors alone."""
        with self._lock:
            key = self.library.get_setting(MODEL_SETTING)
            if key is None:
                raise NotIndexedError(
                    "nothing is indexed yet: add a folder, then run `clipdesk index`"
                )
            if self._index is None or self._index.model_key != key:
                with self.library.session() as s:
                    row = s.scalar(select(db.Model).where(db.Model.key == key))
                if row is None:
                    raise NotIndexedError(
                        f"the library's model {key} is not recorded; "
                        "run `clipdesk index --model ...` again"
                    )
                self._index = VectorIndex(self.library, row.key, row.id, row.dim)
            return self._index

    # -- indexing ----------------------------------------------------------------------

    def index(
        self,
        spec: ModelSpec | None = None,
        device: str | None = None,
        cancel: CancelToken | None = None,
        report: ScanReport | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> Iterator[Progress]:
        """Rescan every folder, embed what is new, and bring the vector index up to date."""
        cancel = cancel or CancelToken()
        with self.library.exclusive("indexing"):
            yield from scan_folders(self.library, cancel, report, max_pixels)
            if cancel.cancelled:
                return
            if device:
                self.library.set_setting(DEVICE_SETTING, device)
            encoder = self.encoder(spec, device)
            row = self._model_row(encoder.spec, encoder.dim)
            self.library.set_setting(MODEL_SETTING, row.key)
            index = self.vector_index()
            index.ensure_current()
            try:
                yield from embed_pending(
                    self.library,
                    encoder,
                    row.id,
                    index,
                    cancel,
                    batch_size=batch_size,
                    max_pixels=max_pixels,
                )
            finally:
                index.save()
            yield Progress("index", len(index), len(index), message="index saved")

    # -- search ------------------------------------------------------------------------

    def _hits(
        self, index: VectorIndex, vector: np.ndarray, k: int, exclude: int | None = None
    ) -> list[SearchHit]:
        """Nearest photos that still exist, best first (deleted files never show)."""
        if k <= 0:
            return []
        ask = k
        while True:
            raw = index.search(vector, ask + 8, exclude)
            rows = self._photo_rows([pid for pid, _ in raw])
            hits = []
            for pid, score in raw:
                photo = rows.get(pid)
                if photo is None or photo.error is not None or not os.path.exists(photo.path):
                    continue
                hits.append(
                    SearchHit(pid, photo.path, score, photo.width, photo.height, photo.taken_at)
                )
            if len(hits) >= k or len(raw) < ask + 8 or ask >= len(index):
                return hits[:k]
            ask *= 4

    def _photo_rows(self, ids: list[int]) -> dict[int, db.Photo]:
        with self.library.session() as s:
            return {p.id: p for p in s.scalars(select(db.Photo).where(db.Photo.id.in_(ids)))}

    def search_text(self, query: str, k: int = 20) -> list[SearchHit]:
        if not query.strip():
            raise ClipdeskError("the search text is empty")
        index = self.vector_index()
        vector = self.encoder().encode_texts([query])[0]
        return self._hits(index, vector, k)

    def find_photo(self, path: str | Path) -> db.Photo | None:
        raw = os.path.abspath(os.path.expanduser(os.fspath(path)))
        candidates = list(dict.fromkeys([raw, normalise_folder(path)]))
        with self.library.session() as s:
            return s.scalar(select(db.Photo).where(db.Photo.path.in_(candidates)).limit(1))

    def photo_vector(self, photo: db.Photo) -> np.ndarray | None:
        spec = self.current_spec()
        if spec is None:
            return None
        with self.library.session() as s:
            blob = s.scalar(
                select(db.Embedding.vector)
                .join(db.Model, db.Model.id == db.Embedding.model_id)
                .where(db.Embedding.fingerprint == photo.fingerprint, db.Model.key == spec.key)
            )
        return None if blob is None else np.frombuffer(blob, dtype=np.float32)

    def search_image(self, image: str | Path | db.Photo, k: int = 20) -> list[SearchHit]:
        """Photos that look like ``image``: a library photo, or any image file."""
        index = self.vector_index()
        if isinstance(image, db.Photo):
            return self.similar(image, k)
        path = os.fspath(image)
        try:
            rgb = load_rgb(path, self.encoder().image_size)
        except ImageRejected as exc:
            raise ClipdeskError(f"cannot use {path} as a query image: {exc}") from exc
        vector = self.encoder().encode_images([rgb])[0]
        return self._hits(index, vector, k)

    def similar(self, photo: db.Photo | str | Path, k: int = 20) -> list[SearchHit]:
        """Nearest neighbours of a photo (itself left out); uses its stored vector when
        it has one, so no model is needed."""
        found = photo if isinstance(photo, db.Photo) else self.find_photo(photo)
        if found is None:
            if not os.path.isfile(os.fspath(photo)):  # type: ignore[arg-type]
                raise ClipdeskError(f"no such photo: {photo}")
            return self.search_image(os.fspath(photo), k)  # type: ignore[arg-type]
        vector = self.photo_vector(found)
        if vector is None:
            if found.error:
                raise ClipdeskError(f"{found.path} could not be indexed: {found.error}")
            return self.search_image(found.path, k)
        return self._hits(self.vector_index(), vector, k, exclude=found.id)

    # -- status ------------------------------------------------------------------------

    def status(self) -> LibraryStatus:
        spec = self.current_spec()
        key = spec.key if spec else None
        with self.library.session() as s:
            model_id = s.scalar(select(db.Model.id).where(db.Model.key == key)) if key else None
            embedded = select(db.Embedding.fingerprint).where(db.Embedding.model_id == model_id)
            is_indexed = db.Photo.fingerprint.in_(embedded) & db.Photo.error.is_(None)
            photos = s.scalar(select(func.count()).select_from(db.Photo)) or 0
            indexed = s.scalar(select(func.count()).where(is_indexed)) or 0
            failed = s.execute(
                select(db.Photo.path, db.Photo.error)
                .where(db.Photo.error.is_not(None))
                .order_by(db.Photo.path)
            ).all()
            folders = []
            for root in s.scalars(select(db.Root).order_by(db.Root.path)):
                in_root = db.Photo.root_id == root.id
                folders.append(
                    FolderStatus(
                        root.path,
                        s.scalar(select(func.count()).where(in_root)) or 0,
                        s.scalar(select(func.count()).where(in_root, is_indexed)) or 0,
                        os.path.isdir(root.path),
                    )
                )
        device_pref = self.library.get_setting(DEVICE_SETTING, "auto") or "auto"
        used = self.library.get_setting(DEVICE_USED_SETTING)
        device = used if used else f"{device_pref} (no model run yet)"
        return LibraryStatus(
            library=str(self.library.directory),
            photos=photos,
            indexed=indexed,
            pending=photos - indexed - len(failed),
            failed=[(p, e or "") for p, e in failed],
            folders=folders,
            model=(
                spec.spec + (" (random weights: tests/benchmarks only)" if spec.is_random else "")
            )
            if spec
            else None,
            model_key=key,
            random_weights=bool(spec and spec.is_random),
            device=device,
        )
