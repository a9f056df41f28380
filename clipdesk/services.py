"""The services the CLI and the GUI both call: index, search, similar, status.

Plain Python, no Qt, no printing. Long jobs are generators of :class:`Progress`.

Over 600 lines on purpose: it is the one facade, one method per thing a person does (add,
index, search, albums, browse, tag, status), each a few lines that call the rooms below; the
longest, ``index``, strings the indexing steps together under the writer lock. Work that
is more than glue lives in the rooms (search.ranking, search.albums, indexing.probe ...).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from clipdesk.backends.choice import fixed_backend as backend_fixed_by
from clipdesk.backends.choice import measure_again
from clipdesk.backends.runtimes import BACKEND_NAMES
from clipdesk.duplicates.finding import DuplicateFinder, DuplicateGroup, DuplicateReport
from clipdesk.duplicates.trash import Trashed, TrashReport, trash_log, trash_photos
from clipdesk.errors import ClipdeskError, ModelUnavailableError, NotIndexedError
from clipdesk.imaging import DEFAULT_MAX_PIXELS, ImageRejected, load_rgb
from clipdesk.indexing import device_decode
from clipdesk.indexing.embedding import (
    DEFAULT_BATCH_SIZE,
    embed_pending,
    pending_images,
)
from clipdesk.indexing.exporting import export_encoder, export_once
from clipdesk.indexing.probe import measure_backends
from clipdesk.library import Library, db
from clipdesk.library import tags as tag_marks
from clipdesk.library.browsing import (
    PhotoDetails,
    PhotoRef,
    find_photo,
    list_photo_ids,
    list_photos,
    photo_details,
    photo_refs,
)
from clipdesk.library.counting import count_photos
from clipdesk.library.scanning import (
    ScanReport,
    add_folders,
    folder_unavailable,
    normalise_folder,
    remove_folder,
    scan_folders,
    unavailable_folders,
)
from clipdesk.library.thumbnails import ThumbnailCache
from clipdesk.models import export_files
from clipdesk.models.catalog import DEFAULT_NAME
from clipdesk.models.encoder import Encoder
from clipdesk.models.store import ModelStore, display_name
from clipdesk.progress import CancelToken, Progress
from clipdesk.search.albums import (
    AlbumCount,
    AlbumCounts,
    SavedAlbum,
    album_tags,
    delete_album,
    get_album,
    library_state,
    list_albums,
    rename_album,
    save_album,
)
from clipdesk.search.filters import NoPhotoPassesError, matching_photo_ids
from clipdesk.search.query import Filters, ParsedQuery, Term, combine, format_query, parse_query
from clipdesk.search.ranking import CUTOFF_K, PLAIN_K, Ranking, Sort, listed, rank, term_vectors
from clipdesk.search.results import SearchHit, nearest_photos, stored_vector
from clipdesk.search.vector_index import VectorIndex
from clipdesk.serving import (
    DEVICE_SETTING,
    DEVICE_USED_SETTING,
    MODEL_SETTING,
    TARGET_SETTING,
    ModelServer,
)
from clipdesk.spec import ModelSpec
from clipdesk.tagging import xmp
from clipdesk.tagging.review import ReviewQueue, review_queue
from clipdesk.tagging.zero_shot import (
    PhotoTags,
    background_embedding,
    build_classifier,
    create_label_set,
    delete_label_set,
    label_sets,
    tag_filter,
    tag_photos,
    tags_of_photos,
)
from clipdesk.throttle import Throttle, applied, limited_threads

ALBUM_LISTED_K = 100_000  # an album of filters only lists every photo that passes them
log = logging.getLogger(__name__)
NULL_VECTOR_SETTING = "null_vector"  # per model key: the generic prompts' vector (JSON)
BACKEND_SETTING = "backend"  # "auto" (measure once per model and machine) or a backend name


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


class Clipdesk:
    """One library and its (lazily loaded) model, shared by CLI commands and GUI workers.

    The models themselves (which one serves, loading, idle unload, the indexes, the models
    folder) are :attr:`serving`'s (:class:`clipdesk.serving.ModelServer`); the verbs are here.
    """

    def __init__(self, library: Library, store: ModelStore | None = None) -> None:
        self.library = library
        self.serving = ModelServer(library, store)
        self.thumbnails = ThumbnailCache(library)
        self._null_vectors: dict[str, np.ndarray] = {}
        self._album_counts = AlbumCounts()
        self._duplicates = DuplicateFinder(library)

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
        encoder = self.encoder(spec or self.current_spec() or self.default_spec())
        return export_encoder(self.library, encoder, exports_dir, report, replace)

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
                measured = yield from measure_backends(
                    self.library,
                    encoder,
                    row.id,
                    index,
                    pending,
                    cancel,
                    max_pixels,
                    self.library.get_setting(BACKEND_SETTING),
                    remeasure,
                )
                if measured is None:  # cancelled (the index is saved)
                    return
                embedded_before = measured
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
                yield from export_once(self.library, encoder, cancel)

    # -- search ------------------------------------------------------------------------

    def _allowed(self, index: VectorIndex, tag: str | None) -> set[int] | None:
        return None if tag is None else tag_filter(self.library, index.model_id, tag)

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
        return nearest_photos(self.library, index, vector, k, exclude, allowed)

    def search_text(self, query: str, k: int = 20, tag: str | None = None) -> list[SearchHit]:
        if not query.strip():
            raise ClipdeskError("the search text is empty")
        index = self.vector_index()
        vector = self.query_encoder().encode_texts([query])[0]
        return self._hits(index, vector, k, tag=tag)

    def search(
        self,
        query: str | ParsedQuery,
        *,
        k: int | None = None,
        cutoff: bool = False,
        sort: Sort = "relevance",
        filters: Filters | None = None,
        like: Sequence[db.Photo | str | Path] = (),
    ) -> Ranking:
        """One search as the search field and ``clipdesk search`` write it: terms (text,
        image files, library photos; weighted, subtracted: :mod:`clipdesk.search.query`),
        filters typed in the query and/or given in ``filters``, photos to look like
        (``like``: "more like these"), the relevance ``cutoff`` and the ``sort``.
        ``k``: the most photos returned (default 200 with the cutoff, 20 without). A query
        of filters only lists the photos that pass them, in the date order (newest first
        unless ``sort`` says oldest)."""
        parsed = parse_query(query) if isinstance(query, str) else query
        wanted = parsed.filters if filters is None else parsed.filters.merged(filters)
        limit = k if k is not None else (CUTOFF_K if cutoff else PLAIN_K)
        missing = [os.fspath(item) for item in like if not isinstance(item, db.Photo)]
        missing += [str(term.path()) for term in parsed.terms if term.kind == "image"]
        for path in missing:  # a typo in a path is the first thing to say
            if not os.path.isfile(path) and self.find_photo(path) is None:
                raise ClipdeskError(f"no such photo: {path}")
        index = self.vector_index()
        allowed = self._filtered(index, wanted)
        vectors, weights, searched_by = term_vectors(
            parsed.terms, lambda texts: self.query_encoder().encode_texts(texts), self._term_vector
        )
        for item in like:
            vector, photo_id = self._like_vector(item)
            vectors.append(vector)
            weights.append(1.0)
            if photo_id is not None:
                searched_by.add(photo_id)
        if not vectors:
            if parsed.filters.is_empty() and filters is None:
                raise ClipdeskError("the search text is empty")
            return listed(self.library, allowed, limit, newest_first=sort != "oldest")
        vector = combine(np.stack(vectors), weights)
        null = self._null_vector() if cutoff else None
        return rank(
            self.library,
            index,
            vector,
            k=limit,
            allowed=allowed,
            exclude=searched_by,
            cutoff=cutoff,
            null_vector=null,
            sort=sort,
        )

    def _filtered(self, index: VectorIndex, filters: Filters) -> set[int] | None:
        """The photo ids the filters let through (None: no filter); a filter that lets
        nothing through is an error that says so."""
        allowed = matching_photo_ids(self.library, filters)
        for tag in filters.tags:
            tagged = tag_filter(self.library, index.model_id, tag)
            allowed = tagged if allowed is None else allowed & tagged
        if allowed is not None and not allowed:
            raise NoPhotoPassesError(
                f"no photo passes the filters ({format_query(ParsedQuery((), filters))})"
            )
        return allowed

    def _term_vector(self, term: Term) -> tuple[np.ndarray, int | None]:
        if term.kind == "photo":
            with self.library.session() as s:
                photo = s.get(db.Photo, term.photo_id)
            if photo is None:
                raise ClipdeskError(f"no photo with id {term.photo_id} in the library")
            return self._like_vector(photo)
        return self._like_vector(term.path())  # (checked to exist before the search)

    def _like_vector(self, item: db.Photo | str | Path) -> tuple[np.ndarray, int | None]:
        """The vector of a library photo (stored) or an image file (encoded), and the
        photo's id when it is one of the library's."""
        photo: db.Photo | None
        if isinstance(item, db.Photo):
            photo, path = item, item.path
        else:
            photo, path = self.find_photo(item), os.fspath(item)
        if photo is not None:
            vector = self.photo_vector(photo)
            if vector is not None:
                return vector, photo.id
            if photo.error:
                raise ClipdeskError(f"{photo.path} could not be indexed: {photo.error}")
        if not os.path.isfile(path):
            raise ClipdeskError(f"no such photo: {path}")
        try:
            encoder = self.query_encoder()
            rgb = load_rgb(path, encoder.decode_side)
        except ImageRejected as exc:
            raise ClipdeskError(f"cannot use {path} as a query image: {exc}") from exc
        return encoder.encode_images([rgb])[0], None if photo is None else photo.id

    def _null_vector(self) -> np.ndarray | None:
        """The serving model's generic-prompt vector (the cutoff's null): encoded once per
        model and kept in the library, so a search by stored vectors alone ("find similar")
        needs no model loaded. None when no model can encode it (the cutoff then goes on
        without it)."""
        key = self.serving.serving_key()
        if key is None:
            return None
        if key not in self._null_vectors:
            setting = f"{NULL_VECTOR_SETTING}:{key}"
            stored = self.library.get_setting(setting)
            if stored is not None:
                vector = np.asarray(json.loads(stored), dtype=np.float32)
            else:
                try:
                    vector = background_embedding(self.query_encoder())
                except ModelUnavailableError:
                    return None
                try:
                    self.library.set_setting(setting, json.dumps([float(x) for x in vector]))
                except Exception as exc:  # a read-only library: encoded again next time
                    log.info("generic-prompt vector not kept: %s", exc)
            self._null_vectors[key] = vector
        return self._null_vectors[key]

    def find_photo(self, path: str | Path) -> db.Photo | None:
        return find_photo(self.library, path)

    def photo_vector(self, photo: db.Photo) -> np.ndarray | None:
        model_id = self.serving.model_id(self.serving.serving_key())
        if model_id is None:
            return None
        return stored_vector(self.library, photo.fingerprint, model_id)

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
        vector, photo_id = self._like_vector(photo)
        return self._hits(self.vector_index(), vector, k, exclude=photo_id, tag=tag)

    # -- duplicates ----------------------------------------------------------------------

    def compare_photos(self, cancel: CancelToken | None = None) -> Iterator[Progress]:
        """The nearest-neighbour pass that near-duplicates need (one per photo content,
        through the vector index, from stored vectors: no model loaded). Kept until the
        library changes, so :meth:`duplicates` at another threshold regroups at once."""
        yield from self._duplicates.compare(self.vector_index(), cancel)

    def duplicates(
        self, folder: str | Path | None = None, threshold: float | None = None, exact: bool = False
    ) -> DuplicateReport:
        """Groups of exact copies and (unless ``exact``) near-duplicates under ``folder``
        (default: the library), each with the photo to keep first. ``threshold``: the
        cosine from which two photos are near-duplicates (None: derived from the library,
        see :func:`clipdesk.duplicates.grouping.derived_threshold`). Runs
        :meth:`compare_photos` first when its lists are not current."""
        target = self._within_library(folder)
        index = None if exact else self.vector_index()
        if index is not None:
            for _ in self._duplicates.compare(index):
                pass
        return self._duplicates.report(index, target, threshold, exact)

    def trash_duplicates(
        self,
        groups: Sequence[DuplicateGroup],
        keep: dict[int, Sequence[int]] | None = None,
        cancel: CancelToken | None = None,
    ) -> TrashReport:
        """Move to the system trash what each group does not keep: ``keep`` maps a
        group's key to the photo ids kept (default: the suggestion). A group whose kept
        photos are not all on disk now is left whole (reported), so no photo is lost."""
        chosen = keep or {}
        drop: list[int] = []
        left: list[tuple[str, str]] = []
        for group in groups:
            kept_ids = list(chosen.get(group.key, [group.kept.photo_id]))
            dropping = group.to_drop(kept_ids)
            absent = [
                m.path
                for m in group.members
                if m.photo_id in kept_ids and not os.path.isfile(m.path)
            ]
            if absent:
                why = f"the photo kept is not on disk now ({absent[0]}): its group is left whole"
                left += [(m.path, why) for m in dropping]
                continue
            drop += [m.photo_id for m in dropping]
        report = trash_photos(self.library, drop, cancel) if drop else TrashReport()
        report.failed[:0] = left
        return report

    def trash(self, photo_ids: Sequence[int], cancel: CancelToken | None = None) -> TrashReport:
        """Move these photos to the system trash (the user confirmed); the library forgets
        them and notes them in :meth:`trash_log`."""
        return trash_photos(self.library, photo_ids, cancel)

    def trash_log(self) -> list[Trashed]:
        """What clipdesk moved to the trash, oldest first, with where each went."""
        return trash_log(self.library)

    # -- smart albums -------------------------------------------------------------------

    def save_album(
        self,
        name: str,
        query: str,
        cutoff: bool = True,
        sort: Sort = "relevance",
        k: int | None = None,
        replace: bool = False,
    ) -> SavedAlbum:
        """Save a search as a smart album (the query is checked by reading it); an album
        of that name is replaced only with ``replace``."""
        return save_album(
            self.library, name, query, cutoff=cutoff, sort=sort, k=k, replace_existing=replace
        )

    def albums(self) -> list[AlbumCount]:
        """Every album with how many photos it shows. A count is searched again only once
        the library changed since it was found (``search.albums.library_state``)."""
        key = self.serving.serving_key()
        states: dict[tuple[str, ...], tuple[object, ...]] = {}
        counts = []
        for album in list_albums(self.library):
            tags = album_tags(album)
            if tags not in states:
                states[tags] = library_state(self.library, key, tags)
            known = self._album_counts.get(album, states[tags])
            if known is None:
                try:
                    known = AlbumCount(album, len(self._run_album(album).hits))
                except NotIndexedError:
                    known = AlbumCount(album, 0)
                except ClipdeskError as exc:
                    known = AlbumCount(album, None, str(exc))
                self._album_counts.put(states[tags], known)
            counts.append(known)
        return counts

    def album(self, name: str) -> Ranking:
        """The album's photos now: its search run again (new, moved and deleted photos
        and the serving model are followed)."""
        return self._run_album(get_album(self.library, name))

    def _run_album(self, album: SavedAlbum) -> Ranking:
        parsed = album.parsed
        k = album.k if album.k is not None or parsed.terms else ALBUM_LISTED_K
        try:
            return self.search(parsed, k=k, cutoff=album.cutoff, sort=album.sort)
        except NoPhotoPassesError:  # none yet: the album fills as photos come
            return Ranking([], None, 0)

    def rename_album(self, old: str, new: str) -> SavedAlbum:
        self._album_counts.forget(old)
        return rename_album(self.library, old, new)

    def delete_album(self, name: str) -> None:
        self._album_counts.forget(name)
        delete_album(self.library, name)

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

    def _within_library(self, folder: str | Path | None) -> str | None:
        """``folder`` normalised (None: the whole library); a ClipdeskError unless it lies
        inside a library folder or holds one."""
        target = None if folder is None else normalise_folder(folder)
        if target is not None and not any(
            target == r.path
            or target.startswith(r.path.rstrip(os.sep) + os.sep)
            or r.path.startswith(target.rstrip(os.sep) + os.sep)
            for r in self.library.roots()
        ):
            raise ClipdeskError(f"{folder} is not inside a library folder")
        return target

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
        if folder is not None and os.path.isfile(normalise_folder(folder)):
            raise ClipdeskError(f"{folder} is a file: tag a folder, or the whole library")
        target = self._within_library(folder)
        encoder = self.query_encoder()
        yield from tag_photos(
            self.library, encoder, index.model_id, label_set, target, multi, prompts, cancel
        )

    def check_label(self, label_set: str, label: str) -> None:
        """A ClipdeskError unless ``label`` is one of the set's labels."""
        labels = label_sets(self.library).get(label_set)
        if labels is None:
            known = ", ".join(label_sets(self.library)) or "none yet"
            raise ClipdeskError(f"no label set named {label_set!r} (known: {known})")
        if label not in labels:
            raise ClipdeskError(
                f"{label!r} is not a label of {label_set!r} (its labels: {', '.join(labels)})"
            )

    def photos_at(self, paths: Sequence[str | Path]) -> tuple[list[db.Photo], list[str]]:
        """The library's photos at ``paths`` and the paths that are none of its photos."""
        found: list[db.Photo] = []
        missing: list[str] = []
        for path in paths:
            photo = self.find_photo(path)
            if photo is None:
                missing.append(os.fspath(path))
            else:
                found.append(photo)
        return found, missing

    def mark_tag(
        self, name: str, photo_ids: Sequence[int], source: str | None
    ) -> tag_marks.MarkChange:
        """Say ``name`` is ``source`` (confirmed, rejected, manual; None: forget what was
        said) for the contents of ``photo_ids``; :meth:`undo_mark` takes it back. Marks
        are kept by content, so they follow renames, moves and model switches."""
        try:
            return tag_marks.set_marks(self.library, photo_ids, name, source)
        except ValueError as exc:  # a name no other app would read back the same
            raise ClipdeskError(str(exc)) from exc

    def undo_mark(self, change: tag_marks.MarkChange) -> None:
        tag_marks.undo_marks(self.library, change)

    def known_tags(self) -> list[str]:
        """Every tag name in the library (labels of the sets, tags given by hand or
        imported), for completion."""
        return tag_marks.known_tag_names(self.library)

    def tags_of(self, photo_ids: Sequence[int]) -> dict[int, list[tag_marks.Tag]]:
        """Each photo's tags under the serving model, the user's first (library.tags)."""
        model_id = self.serving.model_id(self.serving.serving_key())
        return tag_marks.tags_by_photo(self.library, model_id, photo_ids)

    def _tag_scope(self, folder: str | Path | None) -> list[tuple[int, str]]:
        """The library's photos (id, path) under ``folder`` (a folder or one photo)."""
        target = self._within_library(folder)
        photos = xmp.library_photos(self.library, target)
        if target is not None and not photos and not os.path.exists(target):
            raise ClipdeskError(f"no such folder: {folder}")  # a typo, not "0 photos"
        return photos

    def export_tags_xmp(
        self,
        folder: str | Path | None,
        report: xmp.SidecarReport,
        with_auto: bool = True,
        cancel: CancelToken | None = None,
    ) -> Iterator[Progress]:
        """Write each photo's tags (automatic ones unless ``with_auto`` is False) as
        keywords to its XMP sidecar, merged with what the sidecar holds (tagging.xmp).
        Only sidecars are written; ``report`` says what was done and what failed."""
        model_id = self.serving.model_id(self.serving.serving_key())
        photos = self._tag_scope(folder)
        yield from xmp.export_sidecars(self.library, model_id, photos, with_auto, report, cancel)

    def import_tags(
        self,
        folder: str | Path | None,
        report: xmp.ImportReport,
        cancel: CancelToken | None = None,
    ) -> Iterator[Progress]:
        """Keywords from the photos' sidecars and their own XMP/IPTC (read only) as tags
        of source "imported"; what the user said of a tag for a photo is kept."""
        model_id = self.serving.model_id(self.serving.serving_key())
        photos = self._tag_scope(folder)
        yield from xmp.import_keywords(self.library, photos, report, cancel, model_id)

    def tag_table(
        self, folder: str | Path | None = None, with_auto: bool = True
    ) -> list[tuple[str, list[tag_marks.Tag]]]:
        """Every photo under ``folder`` with its tags (for ``tags export --csv/--json``)."""
        photos = self._tag_scope(folder)
        tags = self.tags_of([pid for pid, _path in photos])
        return [
            (path, [t for t in tags.get(pid, []) if with_auto or t.source != tag_marks.AUTO])
            for pid, path in photos
        ]

    def photo_tags(self, label_set: str, folder: str | Path | None = None) -> list[PhotoTags]:
        index = self.vector_index()
        target = None if folder is None else normalise_folder(folder)
        return tags_of_photos(self.library, index.model_id, label_set, target)

    def review_queue(
        self,
        label_set: str,
        label: str,
        order: str = "surest",
        cancel: CancelToken | None = None,
    ) -> ReviewQueue:
        """The photos ``label`` of ``label_set`` was given or nearly given, in review
        order (``surest`` or ``least_sure``), with the user's marks (tagging.review)."""
        self.check_label(label_set, label)
        index = self.vector_index()
        classifier = build_classifier(self.library, self.query_encoder(), index.model_id, label_set)
        return review_queue(
            self.library, classifier, index.model_id, label_set, label, order, cancel
        )

    # -- status ------------------------------------------------------------------------

    def unavailable_folders(self) -> list[tuple[str, str]]:
        """Library folders whose photos cannot be shown now (path, why): kept, not shown."""
        return unavailable_folders(self.library)

    def status(self) -> LibraryStatus:
        spec = self.current_spec()
        key = spec.key if spec else None
        model_id = self.serving.model_id(key)
        target = self.target_spec()
        target_id = self.serving.model_id(target.key if target else None)
        counts = count_photos(self.library, model_id, target_id)
        folders = [
            FolderStatus(root.path, *counts.per_folder.get(root.id, (0, 0)), reason is None, reason)
            for root in self.library.roots()
            for reason in [folder_unavailable(root, self.library)]
        ]
        device_pref = self.library.get_setting(DEVICE_SETTING, "auto") or "auto"
        used = self.library.get_setting(DEVICE_USED_SETTING)
        device = used if used else f"{device_pref} (no model run yet)"
        return LibraryStatus(
            library=str(self.library.directory),
            photos=counts.photos,
            indexed=counts.indexed,
            pending=counts.photos - counts.indexed - len(counts.failed),
            failed=counts.failed,
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
            tags=tag_marks.tag_counts(self.library, model_id),  # hand-given ones too
            switching_to=display_name(target) if target else None,
            switching_done=counts.of_target,
        )
