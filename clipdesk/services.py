"""The services the CLI and the GUI both call: index, search, similar, status.

Plain Python, no Qt, no printing. Long jobs are generators of :class:`Progress`.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sqlalchemy import case, func, select

from clipdesk.backends.choice import fixed_backend as backend_fixed_by
from clipdesk.backends.choice import measure_again
from clipdesk.backends.measuring import MeasurementCancelled, watched
from clipdesk.backends.runtimes import BACKEND_NAMES, unit_rows
from clipdesk.errors import ClipdeskError, ModelUnavailableError
from clipdesk.imaging import DEFAULT_MAX_PIXELS, ImageRejected, load_rgb
from clipdesk.indexing import device_decode
from clipdesk.indexing.embedding import (
    DEFAULT_BATCH_SIZE,
    PendingImage,
    commit_batch,
    embed_pending,
    pending_images,
)
from clipdesk.library import Library, db
from clipdesk.library.browsing import (
    PhotoDetails,
    PhotoRef,
    list_photo_ids,
    list_photos,
    photo_details,
    photo_refs,
)
from clipdesk.library.scanning import (
    ScanReport,
    add_folders,
    folder_unavailable,
    normalise_folder,
    remove_folder,
    scan_folders,
)
from clipdesk.library.thumbnails import ThumbnailCache
from clipdesk.models import export_files
from clipdesk.models.catalog import DEFAULT_NAME
from clipdesk.models.encoder import ClipEncoder, Encoder
from clipdesk.models.store import ModelStore, display_name
from clipdesk.progress import CancelToken, JobWarning, Progress, RateMeter, run_reporting
from clipdesk.search.vector_index import VectorIndex
from clipdesk.serving import (
    DEVICE_SETTING,
    DEVICE_USED_SETTING,
    MODEL_SETTING,
    TARGET_SETTING,
    ModelServer,
)
from clipdesk.spec import ModelSpec
from clipdesk.tagging.zero_shot import (
    PhotoTags,
    create_label_set,
    delete_label_set,
    label_sets,
    photos_with_tag,
    tag_counts,
    tag_photos,
    tags_of_photos,
)
from clipdesk.throttle import Throttle, applied, limited_threads

BACKEND_SETTING = "backend"  # "auto" (measure once per model and machine) or a backend name


@dataclass(frozen=True)
class SearchHit:
    photo_id: int
    path: str
    score: float
    width: int | None
    height: int | None
    taken_at: float
    fingerprint: str = ""

    @property
    def ref(self) -> PhotoRef:
        return PhotoRef(
            self.photo_id, self.path, self.fingerprint, self.width, self.height, self.taken_at
        )

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
    reason: str | None = None  # why it is not available (missing, not mounted)


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
    tags: dict[str, int] = field(default_factory=dict)
    switching_to: str | None = None  # a model being embedded, not yet serving
    switching_done: int = 0

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
            "tags": self.tags,
            "switching_to": self.switching_to,
            "switching_done": self.switching_done,
        }


# Photos a backend is judged on. Rankings among more photos have more near-ties, so a small
# probe is optimistic: OpenVINO bf16 kept the top-10 of 95.7 % of 93 test photos but of only
# 84 % of all 372. 256 costs ~13 s of fp32 ViT-B-32 on 2 cores, once per model and machine.
PROBE_PHOTOS = 256
MAX_SEARCH_DEPTH = 4096  # neighbours looked at, at most, to find k photos that still exist
AUTO_EXPORT_ENV = "CLIPDESK_AUTO_EXPORT"  # "0": no export after a model's first full index
# Lines an export's child reports (model loaded, photos read, two towers exported, two
# judged, written), and the parent's "done": the export's progress counts these.
EXPORT_STEPS = 7


@dataclass(frozen=True)
class Probe:
    pixels: np.ndarray  # preprocessed, one row per photo used
    used: list[int]  # each row's position in the paths it was drawn from


def _probe_batch(
    encoder: Encoder,
    paths: list[str],
    max_pixels: int,
    cancel: CancelToken | None = None,
    report: Callable[[Progress], None] | None = None,
) -> Probe | None:
    """Up to PROBE_PHOTOS of the user's own photos, preprocessed, spread over the library,
    to judge the encoder backends on; None when too few can be read (or ``cancel``)."""
    step = max(len(paths) // PROBE_PHOTOS, 1)
    tensors, used = [], []
    positions = range(0, len(paths), step)[:PROBE_PHOTOS]
    meter = RateMeter(total=len(positions))
    for count, position in enumerate(positions):
        if cancel is not None and cancel.cancelled:
            return None
        if report is not None:
            report(meter.report("prepare", count, message="reading sample photos"))
        try:
            image = load_rgb(paths[position], encoder.decode_side, max_pixels)
            tensors.append(encoder.preprocess_image(image))
            used.append(position)
        except ImageRejected:
            continue  # the pipeline meets it again and records why
    if len(tensors) < 24:
        return None  # synthetic probes then
    return Probe(np.stack(tensors), used)


class Clipdesk:
    """One library and its (lazily loaded) model, shared by CLI commands and GUI workers.

    The models themselves (which one serves, loading, idle unload, the indexes, the models
    folder) are :attr:`serving`'s (:class:`clipdesk.serving.ModelServer`); the verbs are here.
    """

    def __init__(self, library: Library, store: ModelStore | None = None) -> None:
        self.library = library
        self.serving = ModelServer(library, store)
        self.thumbnails = ThumbnailCache(library)

    @property
    def cold_scan(self) -> bool:
        """A process that answers one query (a CLI search): scan the int8 copy of the
        vectors instead of loading the graph (clipdesk.search.compact)."""
        return self.serving.cold_scan

    @cold_scan.setter
    def cold_scan(self, value: bool) -> None:
        self.serving.cold_scan = value

    @property
    def models(self) -> ModelStore:
        """The models folder: installed models, downloads, imports (one for the app)."""
        return self.serving.store

    # -- folders -----------------------------------------------------------------------

    def add_folders(self, folders: list[str | Path]) -> list[str]:
        return add_folders(self.library, folders)

    def remove_folder(self, folder: str | Path) -> int:
        return remove_folder(self.library, folder)

    def scan(
        self,
        cancel: CancelToken | None = None,
        report: ScanReport | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> Iterator[Progress]:
        """Find the folders' photos, without a model: what the window and ``status``
        show before there is one (:meth:`index` scans too, then embeds)."""
        with self.library.exclusive("indexing"):
            yield from scan_folders(self.library, cancel, report, max_pixels)

    # -- model -------------------------------------------------------------------------
    #
    # The *serving* model answers searches. `use_model` names a *target*; indexing embeds
    # the library with the target while searches keep using the serving model's vectors,
    # and the target starts serving once every photo has a vector from it.

    def current_spec(self) -> ModelSpec | None:
        """The model that answers searches now."""
        return self.serving.current_spec()

    def target_spec(self) -> ModelSpec | None:
        """The model being switched to, until its vectors are complete."""
        return self.serving.target_spec()

    def default_spec(self) -> ModelSpec:
        """clipdesk's default model (see :meth:`ModelServer.default_spec`)."""
        return self.serving.default_spec()

    def encoder(self, spec: ModelSpec | None = None, device: str | None = None) -> Encoder:
        """A loaded model; ``spec`` defaults to the serving model, then to the default."""
        return self.serving.encoder(spec, device)

    def preload(self, encoder: Encoder) -> None:
        """Use ``encoder`` for its model from now on, without loading it again."""
        self.serving.preload(encoder)

    def query_encoder(self) -> Encoder:
        """The serving model for one query (its export when that loads faster)."""
        return self.serving.query_encoder()

    def unload_models(self, idle_for: float = 0.0) -> list[str]:
        """Free the models not used for ``idle_for`` seconds; returns their keys."""
        return self.serving.unload_models(idle_for)

    def loaded_models(self) -> list[str]:
        return self.serving.loaded_models()

    def model_ready(self) -> bool:
        """Whether indexing has a model to run without a download: the library's own,
        the default model installed, or an export of it (the CPU bundle's models)."""
        return (
            self.current_spec() is not None
            or self.target_spec() is not None
            or self.models.spec_for(DEFAULT_NAME) is not None
            or export_files.find_export(self.default_spec().key) is not None
        )

    def use_model(self, spec: ModelSpec, device: str | None = None) -> str:
        """Make ``spec`` the target model; returns a sentence saying what happens next."""
        encoder = self.encoder(spec, device)
        try:
            encoder.check_encodes()  # a model that cannot encode a photo is no target
        except ModelUnavailableError:
            self.serving.forget(encoder.spec.key)
            raise
        row = self.serving.record_model(encoder.spec, encoder.dim)
        serving = self.library.get_setting(MODEL_SETTING)
        if serving is None or serving == row.key:
            self.library.set_setting(MODEL_SETTING, row.key)
            self.library.set_setting(TARGET_SETTING, None)
            return f"{display_name(encoder.spec)} is the library's model"
        self.library.set_setting(TARGET_SETTING, row.key)
        current = self.current_spec()
        return (
            f"switching to {display_name(encoder.spec)}: searches keep using "
            f"{display_name(current) if current else serving} until every photo "
            "has been embedded with the new model"
        )

    def vector_index(self) -> VectorIndex:
        """The serving model's index. Needs no model loaded: a similar-photo search runs on
        stored vectors alone."""
        return self.serving.vector_index()

    def export_model(
        self,
        spec: ModelSpec | None,
        exports_dir: Path,
        report: Callable[[str], None] | None = None,
        replace: bool = False,
    ) -> Path:
        """Export ``spec`` (default: the serving model) to run without torch, judged on up
        to PROBE_PHOTOS of the library's own photos; ``replace``: an existing export too."""
        from clipdesk.models.export import export_model

        encoder = self.encoder(spec or self.current_spec() or self.default_spec())
        if not isinstance(encoder, ClipEncoder):  # exporting traces the torch model
            raise ClipdeskError("exporting needs torch: run it with the full clipdesk")
        paths = self._probe_paths()
        probe = _probe_batch(encoder, paths, DEFAULT_MAX_PIXELS) if paths else None
        pixels = probe.pixels if probe else None
        return export_model(encoder, exports_dir, probe=pixels, report=report, replace=replace)

    def set_backend(self, name: str) -> None:
        """Run the encoder on backend ``name`` from now on (``index --backend NAME``), or
        on the one measured fastest once per model and machine ("auto")."""
        if name not in BACKEND_NAMES:  # a typo must not be stored as the setting
            raise ClipdeskError(
                f"unknown encoder backend {name!r} (use {', '.join(BACKEND_NAMES)})"
            )
        self.library.set_setting(BACKEND_SETTING, name)

    def fixed_backend(self) -> str | None:
        """The encoder backend fixed by ``index --backend NAME`` or $CLIPDESK_BACKEND (not
        measured), or None."""
        return backend_fixed_by(self.library.get_setting(BACKEND_SETTING))

    def _probe_paths(self) -> list[str]:
        """Up to PROBE_PHOTOS of the library's photos, spread over it (one id query and
        one page of rows, also at a million photos)."""
        ids = self.browse_ids()
        step = max(len(ids) // PROBE_PHOTOS, 1)
        refs = self.photo_refs([int(i) for i in ids[::step][:PROBE_PHOTOS]])
        return [ref.path for ref in refs.values()]

    # -- indexing ----------------------------------------------------------------------

    def index(
        self,
        spec: ModelSpec | None = None,
        device: str | None = None,
        cancel: CancelToken | None = None,
        report: ScanReport | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        throttle: Throttle | None = None,
        remeasure: bool = False,
    ) -> Iterator[Progress]:
        """Rescan every folder, embed what is new, and bring the vector index up to date.

        ``spec`` (if given) becomes the target model first, as with :meth:`use_model`.
        ``throttle`` limits the cores used and lowers the priority of this thread (run it
        on a thread of its own then) and of the decode threads. ``remeasure``: measure the
        encoder backends again for this model and device, whatever was remembered (a
        backend chosen by setting stays: see :meth:`fixed_backend`).
        """
        cancel = cancel or CancelToken()
        with self.library.exclusive("indexing"):
            yield from scan_folders(self.library, cancel, report, max_pixels)
            if cancel.cancelled:
                return
            if device:
                self.library.set_setting(DEVICE_SETTING, device)
            if spec is not None:
                self.use_model(spec, device)
            building = self.target_spec() or self.current_spec() or self.default_spec()
            encoder = self.encoder(building, device)
            choice = encoder.backend_choice
            if choice is not None and (remeasure or measure_again(choice)):
                # a model loaded afresh measures (below), not as chosen
                self.serving.forget(encoder.spec.key)
                encoder = self.encoder(building, device)
            row = self.serving.record_model(encoder.spec, encoder.dim)
            if self.serving.serving_key() is None:
                self.library.set_setting(MODEL_SETTING, row.key)
            index = self.serving.index_for(row.key)
            cores = throttle.cores if throttle and throttle.max_cores is not None else None
            with limited_threads(cores):
                index.ensure_current()  # a rebuild adds every vector: the throttle's cores
            pending = pending_images(self.library, row.id)
            embedded_before = 0  # by the backend measurement
            if encoder.backend_choice is None and (pending or remeasure):
                yield Progress("prepare", 0, 1, message="measuring the encoder backends")
                kept: list[PendingImage] = []

                def choose(report: Callable[[Progress], None]) -> None:
                    # on a thread of its own (run_reporting): the bar moves meanwhile, and
                    # Ctrl+C stops it between two batches (MeasurementCancelled)
                    # nothing to embed (--remeasure): the library's photos are the probe
                    paths = [p.path for p in pending] or self._probe_paths()
                    probe = _probe_batch(encoder, paths, max_pixels, cancel, report)
                    if cancel.cancelled:
                        return

                    def keep(features: np.ndarray, probe: Probe | None = probe) -> None:
                        # The reference pass over the probe is the default backend's work
                        # on these photos: stored, it is 256 photos less to embed (23 s of
                        # fp32 ViT-B-32 on 2 cores) instead of a measurement thrown away.
                        assert probe is not None
                        kept[:] = [pending[i] for i in probe.used]
                        commit_batch(self.library, row.id, kept, unit_rows(features), [], index)

                    meter = RateMeter(total=1)

                    def step(done: int, total: int, message: str) -> None:
                        meter.total = total
                        report(meter.report("prepare", done, message=message))

                    with watched(cancel, step, remeasure):
                        encoder.select_backend(
                            self.library.get_setting(BACKEND_SETTING),
                            probe=probe.pixels if probe else None,
                            on_reference=keep if probe and pending else None,
                        )

                try:
                    yield from run_reporting(choose, cancel, name="clipdesk-measure")
                except MeasurementCancelled:
                    assert cancel.cancelled  # stopped by the user: returns just below
                if cancel.cancelled:  # the reference pass's vectors are kept, if it ended
                    index.save()
                    return
                embedded_before = len(kept)
                yield Progress("prepare", 1, 1, message=encoder.device_reason)
            if encoder.backend_choice is not None and (pending or remeasure):
                # what encodes this library's photos, for status (chosen now or earlier)
                used = encoder.device_reason
                if encoder.device == "cuda" and device_decode.wanted(encoder):
                    used += "; JPEGs decoded on the GPU (nvJPEG)"
                self.library.set_setting(DEVICE_USED_SETTING, used)
            encoder.limit_threads(throttle.max_cores if throttle else None)
            if batch_size == DEFAULT_BATCH_SIZE and pending:
                batch_size = encoder.cuda_batch_size(batch_size)  # the GPU's memory decides
            try:
                with applied(throttle):
                    yield from embed_pending(
                        self.library,
                        encoder,
                        row.id,
                        index,
                        cancel,
                        batch_size=batch_size,
                        workers=throttle.cores if throttle else None,
                        max_pixels=max_pixels,
                        low_priority=bool(throttle and throttle.low_priority),
                        embedded_before=embedded_before,
                    )
            finally:
                index.save()
            finished = not cancel.cancelled and not pending_images(self.library, row.id)
            if finished and self.library.get_setting(TARGET_SETTING) == row.key:
                self.library.set_setting(MODEL_SETTING, row.key)  # the switch completes
                self.library.set_setting(TARGET_SETTING, None)
            yield Progress("index", len(index), len(index), message="index saved")
            if finished and not cancel.cancelled and encoder.exportable:
                yield from self._export_once(encoder, cancel)

    def _export_once(self, encoder: Encoder, cancel: CancelToken) -> Iterator[Progress]:
        """After a model's first complete index, export it (once, in a child process) so
        that later one-shot searches start without torch. $CLIPDESK_AUTO_EXPORT=0 skips."""
        from clipdesk.models.export import export_model_aside
        from clipdesk.models.store import default_models_dir

        failed_setting = f"export_failed:{encoder.spec.key}"
        if os.environ.get(AUTO_EXPORT_ENV, "1") == "0":
            return
        if export_files.find_export(encoder.spec.key, intact=True) is not None:
            return  # (a damaged one is made again)
        if self.library.get_setting(failed_setting):
            return  # tried once and it failed: not a minute on every index run
        yield Progress("export", 0, 1, message="preparing fast searches (once per model)")
        paths = self._probe_paths()

        def work(report: Callable[[Progress], None]) -> None:
            # The child sends a line per step down a pipe; read here while it runs.
            reader, writer = multiprocessing.get_context("spawn").Pipe(duplex=False)
            meter = RateMeter(total=EXPORT_STEPS)
            stop = threading.Event()

            def relay() -> None:
                done = 0
                report(meter.report("export", done, message="loading the model"))
                while not stop.is_set():
                    try:
                        if not reader.poll(0.2):
                            continue
                        line = str(reader.recv())
                    except (EOFError, OSError):
                        return
                    done = min(done + 1, EXPORT_STEPS - 1)  # the last step is the parent's
                    report(meter.report("export", done, message=line))

            relaying = threading.Thread(target=relay, name="clipdesk-export-steps")
            relaying.start()
            try:
                export_model_aside(
                    encoder.spec,
                    self.library.models_dir,
                    default_models_dir() / export_files.EXPORTS_SUBDIR,
                    paths,
                    cancel,
                    steps=writer,
                )
            finally:
                stop.set()
                relaying.join()
                reader.close()
                writer.close()

        try:
            yield from run_reporting(work, cancel, name="clipdesk-export")
            message = "searches from the command line now start without torch"
            warning = None
        except ClipdeskError as exc:  # a model that cannot be exported still works
            message = f"the model was not exported: {exc}"
            warning = JobWarning.EXPORT_FAILED
            if not cancel.cancelled:
                self.library.set_setting(failed_setting, str(exc))
        yield Progress("export", 1, 1, message=message, warning=warning)

    # -- search ------------------------------------------------------------------------

    def _allowed(self, index: VectorIndex, tag: str | None) -> set[int] | None:
        if tag is None:
            return None
        with self.library.session() as s:
            names = list(s.scalars(select(db.Label.name).distinct().order_by(db.Label.name)))
        if tag not in names:  # a typo would otherwise just find nothing
            known = ", ".join(names) if names else "none yet; see `clipdesk labels --help`"
            raise ClipdeskError(f"no label named {tag!r} (labels: {known})")
        return photos_with_tag(self.library, index.model_id, tag)

    def _hits(
        self,
        index: VectorIndex,
        vector: np.ndarray,
        k: int,
        exclude: int | None = None,
        tag: str | None = None,
    ) -> list[SearchHit]:
        """Nearest photos that still exist, best first (deleted files never show)."""
        if k <= 0:
            return []
        allowed = self._allowed(index, tag)
        if allowed is not None and not allowed:
            return []
        ask = k
        while True:
            raw = index.search(vector, ask + 8, exclude, allowed)
            rows = self._photo_rows([pid for pid, _ in raw])
            hits = []
            for pid, score in raw:
                photo = rows.get(pid)
                if photo is None or photo.error is not None or not os.path.exists(photo.path):
                    continue
                hits.append(
                    SearchHit(
                        pid,
                        photo.path,
                        score,
                        photo.width,
                        photo.height,
                        photo.taken_at,
                        photo.fingerprint,
                    )
                )
            if len(hits) >= k or len(raw) < ask + 8 or ask >= len(index):
                return hits[:k]
            if ask >= MAX_SEARCH_DEPTH:
                # Most neighbours are missing (an unplugged drive?): what exists, not a
                # scan of the whole library.
                return hits
            ask *= 4

    def _photo_rows(self, ids: list[int]) -> dict[int, db.Photo]:
        with self.library.session() as s:
            return {p.id: p for p in s.scalars(select(db.Photo).where(db.Photo.id.in_(ids)))}

    def search_text(self, query: str, k: int = 20, tag: str | None = None) -> list[SearchHit]:
        if not query.strip():
            raise ClipdeskError("the search text is empty")
        index = self.vector_index()
        vector = self.query_encoder().encode_texts([query])[0]
        return self._hits(index, vector, k, tag=tag)

    def find_photo(self, path: str | Path) -> db.Photo | None:
        raw = os.path.abspath(os.path.expanduser(os.fspath(path)))
        candidates = list(dict.fromkeys([raw, normalise_folder(path)]))
        with self.library.session() as s:
            return s.scalar(select(db.Photo).where(db.Photo.path.in_(candidates)).limit(1))

    def photo_vector(self, photo: db.Photo) -> np.ndarray | None:
        model_id = self.serving.model_id(self.serving.serving_key())
        if model_id is None:
            return None
        with self.library.session() as s:
            blob = s.scalar(
                select(db.Embedding.vector).where(
                    db.Embedding.fingerprint == photo.fingerprint,
                    db.Embedding.model_id == model_id,
                )
            )
        return None if blob is None else np.frombuffer(blob, dtype=np.float32)

    def search_image(
        self, image: str | Path | db.Photo, k: int = 20, tag: str | None = None
    ) -> list[SearchHit]:
        """Photos that look like ``image``: a library photo, or any image file."""
        index = self.vector_index()
        if isinstance(image, db.Photo):
            return self.similar(image, k, tag)
        path = os.fspath(image)
        try:
            encoder = self.query_encoder()
            rgb = load_rgb(path, encoder.decode_side)
        except ImageRejected as exc:
            raise ClipdeskError(f"cannot use {path} as a query image: {exc}") from exc
        vector = encoder.encode_images([rgb])[0]
        return self._hits(index, vector, k, tag=tag)

    def similar(
        self, photo: db.Photo | str | Path, k: int = 20, tag: str | None = None
    ) -> list[SearchHit]:
        """Nearest neighbours of a photo (itself left out); uses its stored vector when
        it has one, so no model is needed."""
        found = photo if isinstance(photo, db.Photo) else self.find_photo(photo)
        if found is None:
            if not os.path.isfile(os.fspath(photo)):  # type: ignore[arg-type]
                raise ClipdeskError(f"no such photo: {photo}")
            return self.search_image(os.fspath(photo), k, tag)  # type: ignore[arg-type]
        vector = self.photo_vector(found)
        if vector is None:
            if found.error:
                raise ClipdeskError(f"{found.path} could not be indexed: {found.error}")
            return self.search_image(found.path, k, tag)
        return self._hits(self.vector_index(), vector, k, exclude=found.id, tag=tag)

    # -- browsing ----------------------------------------------------------------------

    def _listing(
        self, folder: str | Path | None, tag: str | None
    ) -> tuple[str | None, set[int] | None]:
        """The folder and the allowed photo ids of a listing (``browse``, ``browse_ids``)."""
        target = None if folder is None else normalise_folder(folder)
        allowed = None
        if tag is not None:
            key = self.serving.serving_key()
            allowed = set() if key is None else self._allowed(self.serving.index_for(key), tag)
        return target, allowed

    def browse(self, folder: str | Path | None = None, tag: str | None = None) -> list[PhotoRef]:
        """The library's readable photos, newest first (under ``folder``; tagged ``tag``)."""
        return list_photos(self.library, *self._listing(folder, tag))

    def browse_ids(self, folder: str | Path | None = None, tag: str | None = None) -> np.ndarray:
        """:meth:`browse` as an array of photo ids (for a grid of any size)."""
        return list_photo_ids(self.library, *self._listing(folder, tag))

    def photo_refs(self, photo_ids: list[int]) -> dict[int, PhotoRef]:
        return photo_refs(self.library, photo_ids)

    def photo_details(self, photo_id: int) -> PhotoDetails | None:
        model_id = self.serving.model_id(self.serving.serving_key())
        return photo_details(self.library, photo_id, model_id)

    # -- tagging -----------------------------------------------------------------------

    def create_label_set(self, name: str, labels: list[str]) -> int:
        return create_label_set(self.library, name, labels)

    def label_sets(self) -> dict[str, list[str]]:
        return label_sets(self.library)

    def delete_label_set(self, name: str) -> None:
        delete_label_set(self.library, name)

    def tag(
        self,
        label_set: str,
        folder: str | Path | None = None,
        multi: bool = False,
        prompts: str = "ensemble",
        cancel: CancelToken | None = None,
    ) -> Iterator[Progress]:
        """Tag the indexed photos (under ``folder``) from their stored vectors."""
        index = self.vector_index()
        target = None if folder is None else normalise_folder(folder)
        if target is not None and os.path.isfile(target):
            raise ClipdeskError(f"{folder} is a file: tag a folder, or the whole library")
        if target is not None and not any(
            target == r.path
            or target.startswith(r.path.rstrip(os.sep) + os.sep)
            or r.path.startswith(target.rstrip(os.sep) + os.sep)
            for r in self.library.roots()
        ):
            raise ClipdeskError(f"{folder} is not inside a library folder")
        encoder = self.query_encoder()
        yield from tag_photos(
            self.library, encoder, index.model_id, label_set, target, multi, prompts, cancel
        )

    def photo_tags(self, label_set: str, folder: str | Path | None = None) -> list[PhotoTags]:
        index = self.vector_index()
        target = None if folder is None else normalise_folder(folder)
        return tags_of_photos(self.library, index.model_id, label_set, target)

    # -- status ------------------------------------------------------------------------

    def unavailable_folders(self) -> list[tuple[str, str]]:
        """Library folders whose photos cannot be shown now (path, why): kept, not shown."""
        with self.library.session() as s:
            roots = list(s.scalars(select(db.Root).order_by(db.Root.path)))
        return [
            (root.path, reason)
            for root in roots
            if (reason := folder_unavailable(root, self.library)) is not None
        ]

    def status(self) -> LibraryStatus:
        spec = self.current_spec()
        key = spec.key if spec else None
        model_id = self.serving.model_id(key)
        target = self.target_spec()
        target_id = self.serving.model_id(target.key if target else None)
        with self.library.session() as s:
            embedded = select(db.Embedding.fingerprint).where(db.Embedding.model_id == model_id)
            is_indexed = db.Photo.fingerprint.in_(embedded) & db.Photo.error.is_(None)
            # One pass over the photos for every folder's counts (a million rows: one scan).
            per_root = {
                root_id: (int(total), int(done or 0))
                for root_id, total, done in s.execute(
                    select(
                        db.Photo.root_id,
                        func.count(),
                        func.sum(case((is_indexed, 1), else_=0)),
                    ).group_by(db.Photo.root_id)
                )
            }
            photos = sum(total for total, _ in per_root.values())
            indexed = sum(done for _, done in per_root.values())
            failed = s.execute(
                select(db.Photo.path, db.Photo.error)
                .where(db.Photo.error.is_not(None))
                .order_by(db.Photo.path)
            ).all()
            folders = [
                FolderStatus(root.path, *per_root.get(root.id, (0, 0)), reason is None, reason)
                for root in s.scalars(select(db.Root).order_by(db.Root.path))
                for reason in [folder_unavailable(root, self.library)]
            ]
            switching_done = 0
            if target is not None:
                by_target = select(db.Embedding.fingerprint).where(
                    db.Embedding.model_id == target_id
                )
                switching_done = (
                    s.scalar(
                        select(func.count()).where(
                            db.Photo.fingerprint.in_(by_target), db.Photo.error.is_(None)
                        )
                    )
                    or 0
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
                display_name(spec)
                + (" (random weights: tests/benchmarks only)" if spec.is_random else "")
            )
            if spec
            else None,
            model_key=key,
            random_weights=bool(spec and spec.is_random),
            device=device,
            tags=tag_counts(self.library, model_id) if model_id is not None else {},
            switching_to=display_name(target) if target else None,
            switching_done=switching_done,
        )
