"""The HNSW vector index: a cache of SQLite's vectors, rebuilt or caught up on demand.

Over 600 lines on purpose: the graph, its checked pointer and its routes for a search (the
graph, the int8 copy for a one-shot process, an exact ranking for a narrow filter) share one
lock and one idea of what is current, which is easiest to keep right in one class.

hnswlib must never add and search at the same time, so every access goes through one
lock. Each save writes a new, uniquely named graph file, fsyncs it, then atomically renames a
small JSON pointer over the old one (write, fsync, rename). The pointer records the
database generation the graph matches, so two processes saving at once (an indexer and a
search that caught up) each leave a consistent pair; a stale graph is caught up from
SQLite, a missing or foreign one is rebuilt.

The pointer also records the graph file's size and a CRC-32 per 64 MiB block, checked
(block by block on all cores) before the graph is loaded: a graph whose bytes changed on
disk is rebuilt from SQLite instead of answering with garbled vectors. hnswlib writes its
file without checking for errors, so a save also checks that the file holds every element
(a full disk cuts it short). A graph that cannot be saved (full disk, read-only library) is
kept in memory for this process.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import math
import os
import struct
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

import numpy as np
from sqlalchemy import select

from clipdesk.errors import ClipdeskError
from clipdesk.files import atomic_write, fsync_file
from clipdesk.library import Library, db, storage_error
from clipdesk.library.queries import in_chunks
from clipdesk.search import breadth
from clipdesk.search.breadth import EfCurve, HeldOut
from clipdesk.search.compact import CompactVectors, DamagedCopy, Snapshot
from clipdesk.throttle import hnswlib_threads

log = logging.getLogger(__name__)

FORMAT = 1
# Graph degree and build/search breadth. bench/bench_hnsw.py, 1M x 512 structured vectors:
# ef 512 gives recall@10 0.978 (fresh queries) / 0.988 (near-duplicates) at p95 3.9 / 4.8 ms
# (ef 256: 0.912 / 0.955 at 2.3 / 2.8 ms). Uniform random vectors, which have no real
# neighbours, are far worse (bench/README.md). EF_SEARCH is the breadth until one is
# measured for the library (clipdesk.search.breadth) and the floor of filtered searches.
M = 16
EF_CONSTRUCTION = 100
EF_SEARCH = 512
_LOAD_CHUNK = 20_000
# Filtered searches (bench/bench_filtered.py, bench/README.md "Filtered search"): each query
# takes the route its estimated cost says is cheaper (RouteCosts): an exact ranking of the
# allowed photos (their int8 codes scored, the best re-ranked with SQLite's vectors; without
# the copy, every allowed vector read from SQLite) or the graph with the filter as hnswlib's
# callback, its ef raised as the filter narrows (filtered_ef).
FILTER_EF_PER_HIT = 1.0  # ef = this x k / selectivity, within [EF_SEARCH, FILTER_EF_CAP]
FILTER_EF_CAP = 8192
# A cold scan of the int8 copy re-ranks this many candidates (at least) with exact vectors.
COLD_CANDIDATES = 256
# How fast a graph file loads (bench/README.md, bench_million.py: 2 GB in 4.4-6.9 s), to
# weigh loading the graph against reading a filter's vectors from SQLite in a cold process.
GRAPH_LOAD_BYTES_PER_S = 300e6


def filtered_ef(want: int, selectivity: float) -> int:
    """The graph's search breadth for ``want`` results under a filter that keeps the
    ``selectivity`` share of the photos: hnswlib's filtered search collects ef matching
    photos, so a narrow filter needs more of them to keep the k best among them."""
    wide = FILTER_EF_PER_HIT * want / max(selectivity, 1e-9)
    return int(max(EF_SEARCH, want, min(FILTER_EF_CAP, math.ceil(wide))))


class RouteCosts:
    """Seconds per unit of work of each route of a filtered search, as this process's own
    searches measured them (a running mean; the first figures are CPU times measured on a
    Zen 3 core at 100k-380k photos, bench/README.md, replaced as searches run here).

    Units: ``score_row``, one allowed photo's int8 codes scored (the shortlist); ``read_row``,
    one exact vector read from SQLite and scored; ``graph_unit``, the filtered graph search
    per ef / sqrt(selectivity): hnswlib walks through photos the filter rejects to collect ef
    it accepts, and over 2-50 % filters its time grew about as ef / sqrt(selectivity) (21-38
    us a unit at 100k photos), far slower than ef / selectivity (5-15 us). The unit grows
    with the library (14 us at 20k), the score of a row little (1.5 us at 100k, 2-3 at
    380k), so the switch point grows with the library: about 20,000 photos (20 %) at 100k,
    about 40,000 (4 %) at 1M."""

    WEIGHT = 0.2  # of the newest measurement in the running mean

    def __init__(
        self, score_row: float = 2e-6, read_row: float = 2e-5, graph_unit: float = 3e-5
    ) -> None:
        self.score_row = score_row
        self.read_row = read_row
        self.graph_unit = graph_unit

    def exact(self, allowed: int, candidates: int, copy: bool) -> float:
        """Estimated seconds to rank ``allowed`` photos exactly, re-ranking ``candidates``
        of them from SQLite (all of them without the int8 copy)."""
        if not copy or allowed <= candidates:
            return self.read_row * allowed
        return self.score_row * allowed + self.read_row * candidates

    def graph(self, ef: int, selectivity: float) -> float:
        """Estimated seconds of a filtered graph search at breadth ``ef``."""
        return self.graph_unit * ef / math.sqrt(max(selectivity, 1e-9))

    def observe(self, name: str, seconds: float, units: float) -> None:
        """Fold one measured step (``name``: "score_row", "read_row" or "graph_unit") of
        ``units`` units that took ``seconds`` into the running mean."""
        if units <= 0 or seconds <= 0:
            return
        old = float(getattr(self, name))
        setattr(self, name, (1 - self.WEIGHT) * old + self.WEIGHT * seconds / units)


def exact_filter(
    allowed: int, live: int, want: int, copy: bool, costs: RouteCosts | None = None
) -> bool:
    """Whether a filter keeping ``allowed`` of ``live`` photos is ranked exactly (True) or
    searched in the graph with ``filtered_ef`` (False): whichever ``costs`` (measured on
    this machine) estimate cheaper for ``want`` results, ``copy`` telling whether the int8
    copy is there to shortlist them."""
    costs = costs or RouteCosts()
    selectivity = min(1.0, allowed / max(live, 1))
    candidates = max(COLD_CANDIDATES, 4 * (want + 1))
    exact = costs.exact(allowed, candidates, copy)
    return exact <= costs.graph(filtered_ef(want, selectivity), selectivity)


def shortlist(
    keys: np.ndarray,
    rows: np.ndarray,
    snapshot: Snapshot,
    ids: np.ndarray,
    vector: np.ndarray,
    want: int,
) -> np.ndarray:
    """The ids among ``ids`` worth an exact score: the ``want`` best by the int8 copy
    (``keys``: its ids sorted, ``rows``: their rows in it) and every id the copy lacks."""
    if not len(keys):
        return ids
    at = np.minimum(np.searchsorted(keys, ids), len(keys) - 1)
    found = keys[at] == ids
    inside, lacking = ids[found], ids[~found]
    if len(inside) <= want:
        return ids
    where = rows[at[found]]
    codes = np.asarray(snapshot.codes[where], dtype=np.float32)
    scores = (codes @ np.asarray(vector, dtype=np.float32)) * snapshot.scales[where]
    best = np.argpartition(-scores, want - 1)[:want]
    return np.concatenate([inside[best], lacking])


class _Graph(Protocol):
    """What is used of ``hnswlib.Index`` (hnswlib has no type hints)."""

    element_count: int

    def init_index(self, max_elements: int, ef_construction: int, M: int) -> None: ...
    def load_index(self, path: str, max_elements: int) -> None: ...
    def save_index(self, path: str) -> None: ...
    def set_ef(self, ef: int) -> None: ...
    def get_max_elements(self) -> int: ...
    def resize_index(self, size: int) -> None: ...
    def get_ids_list(self) -> list[int]: ...
    def get_items(self, ids: Sequence[int]) -> np.ndarray: ...
    def add_items(self, data: np.ndarray, ids: np.ndarray, num_threads: int) -> None: ...
    def mark_deleted(self, label: int) -> None: ...
    def knn_query(
        self,
        data: np.ndarray,
        k: int,
        num_threads: int,
        filter: Callable[[int], bool] | None,  # hnswlib's name for it
    ) -> tuple[np.ndarray, np.ndarray]: ...


def _fsync_dir(folder: Path) -> None:
    if os.name == "nt":  # pragma: no cover - directories cannot be opened on Windows
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# A graph file younger than this may belong to another process's save in progress.
_IN_FLIGHT_S = 30.0
_CHECK_BLOCK = 64 * 2**20  # bytes per checksum block of the graph file
_READ_CHUNK = 8 * 2**20


def _block_crc(path: Path, start: int, length: int) -> int:
    crc = 0
    with open(path, "rb", buffering=0) as fh:
        fh.seek(start)
        while length > 0:
            data = fh.read(min(_READ_CHUNK, length))
            if not data:
                break
            crc = zlib.crc32(data, crc)  # releases the GIL: blocks run on all cores
            length -= len(data)
    return crc


def graph_checksums(path: Path) -> tuple[int, list[int]]:
    """The file's size and the CRC-32 of each of its _CHECK_BLOCK-sized blocks."""
    size = path.stat().st_size
    starts = range(0, size, _CHECK_BLOCK)
    workers = max(1, min(len(starts), os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:
        crcs = list(pool.map(lambda start: _block_crc(path, start, _CHECK_BLOCK), starts))
    return size, crcs


# hnswlib's file: a header of six size_t, an int, a uint32, five more 8-byte fields
# (three size_t, a double, a size_t); every element's level-0 record; then per element a
# uint32 byte count and that many bytes of upper-level links.
_HEADER = struct.Struct("<6QiI3QdQ")


def _graph_file_cut_short(path: Path, count: int) -> bool:
    """Whether hnswlib's file at ``path`` ends before its ``count`` elements do (a write
    that met a full disk: hnswlib does not check its writes). A layout this code does not
    recognise is not judged (False)."""
    with open(path, "rb") as fh:
        header = fh.read(_HEADER.size)
        if len(header) < _HEADER.size:
            return True
        fields = _HEADER.unpack(header)
        offset0, stored, per_element, max_m = fields[0], fields[2], fields[3], fields[8]
        links = max_m * 4 + 4  # bytes of one level's link list
        if offset0 != 0 or stored != count or links <= 4:
            log.debug("unrecognised graph file layout; its length is not checked")
            return False
        start = _HEADER.size + count * per_element
        size = os.fstat(fh.fileno()).st_size
        if size < start + 4 * count:
            return True
        fh.seek(start)
        tail = fh.read()
    if len(tail) % 4:
        return True
    words = np.frombuffer(tail, np.uint32)
    nonzero = np.flatnonzero(words)
    # Most elements have no upper levels (a zero count); walk only to the non-zero counts.
    at = seen = 0
    while seen < count:
        k = int(np.searchsorted(nonzero, at))
        nxt = int(nonzero[k]) if k < len(nonzero) else len(words)
        zeros = min(nxt - at, count - seen)
        seen += zeros
        at += zeros
        if seen == count:
            break
        if at >= len(words):
            return True
        length = int(words[at])
        if length % links:
            log.debug("unrecognised graph file layout; its length is not checked")
            return False
        at += 1 + length // 4
        seen += 1
    return at > len(words)


def load_vectors(
    library: Library, model_id: int, photo_ids: list[int] | None = None
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (photo ids, vectors) chunks for searchable photos under one model."""
    query = (
        select(db.Photo.id, db.Embedding.vector)
        .join(db.Embedding, db.Embedding.fingerprint == db.Photo.fingerprint)
        .where(db.Embedding.model_id == model_id, db.Photo.error.is_(None))
        .order_by(db.Photo.id)
    )
    chunks: list[Sequence[int] | None] = (
        list(in_chunks(photo_ids)) if photo_ids is not None else [None]
    )
    with library.session() as s:
        for chunk in chunks:
            q = query if chunk is None else query.where(db.Photo.id.in_(chunk))
            result = s.execute(q).yield_per(_LOAD_CHUNK)
            for part in result.partitions():
                ids = np.fromiter((row[0] for row in part), dtype=np.int64, count=len(part))
                vectors = np.frombuffer(b"".join(row[1] for row in part), dtype=np.float32)
                yield ids, vectors.reshape(len(part), -1)


def searchable_ids(library: Library, model_id: int) -> set[int]:
    with library.session() as s:
        rows = s.execute(
            select(db.Photo.id)
            .join(db.Embedding, db.Embedding.fingerprint == db.Photo.fingerprint)
            .where(db.Embedding.model_id == model_id, db.Photo.error.is_(None))
        ).scalars()
        return set(rows)


class VectorIndex:
    """HNSW over the photos of one model; labels are photo ids."""

    def __init__(self, library: Library, model_key: str, model_id: int, dim: int) -> None:
        self.library = library
        self.model_key = model_key
        self.model_id = model_id
        self.dim = dim
        self._stem = hashlib.sha256(model_key.encode()).hexdigest()[:16]
        self.meta_path = library.index_dir / f"{self._stem}.json"
        self._lock = threading.RLock()
        self._index: _Graph | None = None
        self._live = 0  # labels present and not deleted
        self._generation = -1  # database generation the in-memory index matches
        self._saved_generation = -2  # what the file on disk matches (nothing yet)
        self.last_action = ""  # "loaded", "rebuilt", "caught up" (for status and tests)
        # The int8 copy (clipdesk.search.compact) for one-shot processes: with ``cold_scan`` set, a
        # search before the graph is loaded scans it instead of reading the graph.
        self.compact = CompactVectors(library.index_dir, self._stem, model_key, dim)
        self._compact_in_sync = False  # rows appended here keep it equal to the graph
        self.cold_scan = False
        self._cold_rows = 0
        # The int8 copy as filtered searches read it: its pointer's stamp, the snapshot,
        # its ids sorted and their rows (see shortlist).
        self._filter_copy: tuple[object, Snapshot, np.ndarray, np.ndarray] | None = None
        self.route_costs = RouteCosts()  # what each route of a filtered search costs here
        # The unfiltered search's breadth: chosen from the recall and times measured on
        # held-out photos (clipdesk.search.breadth), EF_SEARCH until there are some.
        self.ef = EF_SEARCH
        self.ef_curve: EfCurve | None = None
        self._curve_saved: EfCurve | None = None  # the one the pointer on disk holds

    @property
    def _graph(self) -> _Graph:
        """The graph in memory (its users load it first: :meth:`ensure_current`)."""
        assert self._index is not None
        return self._index

    # -- lifecycle ---------------------------------------------------------------------

    def _new_index(self, capacity: int) -> _Graph:
        import hnswlib  # lazy: a cold search scans the int8 copy without it

        index: _Graph = hnswlib.Index(space="ip", dim=self.dim)
        before = breadth.anonymous_regions()
        index.init_index(max_elements=max(capacity, 1024), ef_construction=EF_CONSTRUCTION, M=M)
        breadth.advise_huge_pages(before, collapse=False)  # before the pages are filled
        index.set_ef(EF_SEARCH)
        return index

    @property
    def index_path(self) -> Path | None:
        """The graph file the pointer names now (None if there is no valid pointer)."""
        try:
            meta = json.loads(self.meta_path.read_text(encoding="utf-8"))
            return self.meta_path.parent / os.path.basename(str(meta["file"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _try_load(self) -> tuple[_Graph, int, int, bool] | None:
        """(index, generation, live, whether the pointer has checksums) or None."""
        import hnswlib  # lazy: as above

        for _attempt in range(2):  # a concurrent save may have just replaced the file
            try:
                meta = json.loads(self.meta_path.read_text(encoding="utf-8"))
                if (
                    meta.get("format") != FORMAT
                    or meta.get("model_key") != self.model_key
                    or meta.get("dim") != self.dim
                ):
                    return None
                path = self.meta_path.parent / os.path.basename(str(meta["file"]))
                if not path.is_file():  # hnswlib reports this as a plain RuntimeError
                    continue
                if "crc" in meta and graph_checksums(path) != (meta["size"], meta["crc"]):
                    log.warning(
                        "the search graph %s is damaged (its checksum does not match): "
                        "rebuilding it from the library's database",
                        path,
                    )
                    return None
                index = hnswlib.Index(space="ip", dim=self.dim)
                before = breadth.anonymous_regions()
                index.load_index(str(path), max_elements=int(meta["capacity"]))
                breadth.advise_huge_pages(before, collapse=True)
                index.set_ef(EF_SEARCH)
                self.ef_curve = self._curve_saved = EfCurve.from_json(meta.get("ef_curve"))
                return index, int(meta["generation"]), int(meta["live"]), "crc" in meta
            except (OSError, ValueError, KeyError, TypeError, RuntimeError):
                return None
        return None

    def ensure_current(self) -> None:
        """Make the in-memory index match SQLite: load, catch up or rebuild."""
        with self._lock, self.library.engine.connect() as conn:
            generation = db.current_generation(conn)
            if self._index is not None and self._generation == generation:
                return
            if self._index is None:
                loaded = self._try_load()
                if loaded is None:
                    self._rebuild(generation)
                    return
                self._index, self._generation, self._live, checked = loaded
                self._saved_generation = self._generation
                if not checked:
                    self._add_checksums()
                # The indexer appends to the copy only once its bytes are known good.
                self._compact_in_sync = self.compact.generation() == self._generation and (
                    not self.library.writing or self.compact.verify()
                )
                self.last_action = "loaded"
                self._choose_ef(probe=True)
                if self._generation == generation:
                    return
            self._catch_up(generation)

    def _rebuild(self, generation: int) -> None:
        all_ids = searchable_ids(self.library, self.model_id)
        ids_total = len(all_ids)
        index = self._new_index(ids_total + 1024)
        writing = self.library.writing
        if writing:
            self.compact.reset()
        # A sample of the photos joins the graph last: searched for first, at several ef,
        # they measure the graph's recall on photos it has never seen (breadth.py).
        held = self._held_out(sorted(all_ids), generation)
        for ids, vectors in load_vectors(self.library, self.model_id):
            inside = ~np.isin(ids, held.ids) if held else slice(None)
            index.add_items(vectors[inside], ids[inside], num_threads=hnswlib_threads())
            if held:
                held.add(ids[inside], vectors[inside])
            if writing:
                self.compact.append(ids, vectors)
        self._index = index
        if held:
            self._calibrate(held, ids_total - len(held.ids))
            index.add_items(held.vectors, held.ids, num_threads=hnswlib_threads())
        self._compact_in_sync = writing
        self._generation, self._live = generation, ids_total
        self.last_action = "rebuilt"
        self._save_if_possible()

    def calibrate(self, held: HeldOut) -> None:
        """Measure the breadth with ``held``: vectors that are not in the graph, with their
        exact top 10 over it (e.g. photos of the same kind from elsewhere; bench scripts);
        the next save records it."""
        self.ensure_current()
        with self._lock:
            self._calibrate(held, self._live)

    def _calibration_due(self, adding: int) -> bool:
        """Whether the breadth is measured again before ``adding`` photos join the graph:
        never measured, or the library doubles (recall falls as the graph grows)."""
        curve = self.ef_curve
        return curve is None or self._live + adding >= 2 * curve.live

    def _calibrate_before_adding(self, ids: np.ndarray, vectors: np.ndarray, seed: int) -> None:
        """Measure the breadth on a sample of the photos about to be added (not in the
        graph yet: held out by nature)."""
        count = min(breadth.HELD_OUT, len(ids), self._live // 10)
        if count < 8:
            return
        pick = np.random.default_rng(max(seed, 0)).choice(len(ids), count, replace=False)
        held = HeldOut(ids[pick], vectors.reshape(len(ids), -1)[pick])
        self._calibrate_streaming(held, ids)

    def _calibrate_streaming(self, held: HeldOut, new_ids: np.ndarray) -> None:
        """The exact top 10 of ``held`` over the graph's photos (SQLite's, less
        ``new_ids``, which are not in the graph yet) in one pass, then the measurement."""
        for ids, vectors in load_vectors(self.library, self.model_id):
            inside = ~np.isin(ids, new_ids)
            held.add(ids[inside], vectors[inside])
        self._calibrate(held, self._live)

    def _held_out(self, candidates: list[int], seed: int) -> HeldOut | None:
        """A sample of ``candidates`` (photo ids not yet in the graph) with their vectors,
        or None where there are too few photos to measure anything."""
        count = min(breadth.HELD_OUT, len(candidates) // 10)
        if count < 8:
            return None
        rng = np.random.default_rng(max(seed, 0))
        chosen = sorted(rng.choice(np.asarray(candidates), count, replace=False).tolist())
        parts = list(load_vectors(self.library, self.model_id, chosen))
        if not parts:
            return None
        return HeldOut(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))

    def _calibrate(self, held: HeldOut, live: int) -> None:
        """Measure the graph (holding ``live`` photos, none of ``held``) on the held-out
        photos and choose the breadth from it."""
        if live < 2 * breadth.K:
            return

        def search(query: np.ndarray, ef: int) -> np.ndarray:
            self._graph.set_ef(max(ef, breadth.K))
            labels, _ = self._graph.knn_query(
                query.reshape(1, -1), k=min(breadth.K, live), num_threads=1, filter=None
            )
            return np.asarray(labels[0])

        curve = breadth.measure_curve(search, held.vectors, held.truth(), live)
        curve.probe_ids = held.ids[: breadth.PROBES].tolist()
        self.ef_curve = curve
        self._choose_ef(probe=False)
        log.info(
            "search breadth: ef %d (recall@10 by ef %s, median ms %s, %d photos)",
            self.ef,
            dict(zip(curve.efs, curve.recall, strict=True)),
            [round(1000 * t, 2) for t in curve.seconds],
            live,
        )

    def _choose_ef(self, probe: bool) -> None:
        """The unfiltered breadth from the measured curve; with ``probe``, a few searches
        first time this CPU against the times recorded (a library opened elsewhere)."""
        curve = self.ef_curve
        if curve is None:
            self.ef = EF_SEARCH
            return
        if probe and curve.probe_ids:
            try:
                queries = np.asarray(self._graph.get_items(curve.probe_ids), dtype=np.float32)
            except RuntimeError:  # a probe photo was deleted since
                queries = np.zeros((0, self.dim), np.float32)

            def search(query: np.ndarray, ef: int) -> np.ndarray:
                self._graph.set_ef(max(ef, breadth.K))
                labels, _ = self._graph.knn_query(
                    query.reshape(1, -1), k=breadth.K, num_threads=1, filter=None
                )
                return np.asarray(labels[0])

            curve = curve.scaled(breadth.probe_factor(curve, search, queries))
        self.ef = breadth.choose_ef(curve, breadth.K)

    def _catch_up(self, generation: int) -> None:
        wanted = searchable_ids(self.library, self.model_id)
        present = set(self._graph.get_ids_list())
        for label in present - wanted:
            with contextlib.suppress(RuntimeError):  # already marked deleted
                self._graph.mark_deleted(label)
        # Photo ids are never reused and a deleted photo never comes back (a changed file
        # gets a new row), so a label marked deleted never needs undeleting.
        missing = sorted(wanted - present)
        self._live = len(present & wanted)
        if missing and self._calibration_due(len(missing)):
            held = self._held_out(missing, generation)
            if held is not None:
                self._calibrate_streaming(held, np.asarray(missing, np.int64))
        self._grow(len(missing))
        appending = self._compact_in_sync and self.library.writing
        # Until every row is in both, the copy is not the graph's (a full disk may stop
        # an append after the graph took the rows): the next save then rewrites it.
        self._compact_in_sync = False
        for ids, vectors in load_vectors(self.library, self.model_id, missing):
            self._graph.add_items(vectors, ids, num_threads=hnswlib_threads())
            if appending:
                self.compact.append(ids, vectors)
        self._compact_in_sync = appending  # rows added without the writer lock are not
        self._live = len(wanted)
        self._generation = generation
        self.last_action = "caught up"
        self._save_if_possible()

    def _grow(self, extra: int) -> None:
        needed = self._graph.element_count + extra
        capacity = self._graph.get_max_elements()
        if needed > capacity:
            self._graph.resize_index(max(needed, capacity * 2))

    def _save_if_possible(self) -> None:
        """Save a graph that a search rebuilt or caught up; when the library cannot be
        written (read-only, full disk), keep it in memory and say so in the log."""
        if self.library.read_only:
            return
        try:
            self.save()
        except OSError as exc:
            if storage_error(exc, self.library.directory) is None:
                raise
            log.warning("the search graph is kept in memory, not saved: %s", exc)

    def save(self) -> None:
        """Write the graph and the int8 copy; raises OSError when the disk cannot take
        them (nothing of the earlier files is lost then)."""
        with self._lock:
            if self._index is None:
                return
            self._save_compact()
            if self._generation >= 0 and self._generation == self._saved_generation:
                # The file already holds exactly this (a 1M index is 2 GB to write); a
                # breadth measured since goes into its pointer.
                if self._curve_saved is not self.ef_curve and self.index_path is not None:
                    self._write_pointer(self.index_path.name)
                return
            folder = self.meta_path.parent
            name = f"{self._stem}-{uuid.uuid4().hex[:12]}.hnsw"
            try:
                self._graph.save_index(str(folder / name))
                fsync_file(folder / name)
                if _graph_file_cut_short(folder / name, self._graph.element_count):
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(folder / name))
                self._write_pointer(name)
            except BaseException:
                with contextlib.suppress(OSError):  # the space it took, back to the user
                    (folder / name).unlink()
                raise
            self._saved_generation = self._generation
            self._remove_old_files(keep=name)

    def _add_checksums(self) -> None:
        """Give a pointer written before checksums existed its checksums (the graph just
        loaded from that file), so that later loads can check it."""
        path = self.index_path
        if path is None or self.library.read_only:
            return
        try:
            self._write_pointer(path.name)
        except OSError as exc:
            if storage_error(exc, self.library.directory) is None:
                raise
            log.info("could not add checksums to the graph's pointer: %s", exc)

    def _write_pointer(self, name: str) -> None:
        """Point at graph file ``name`` (written and fsynced): write, fsync, rename."""
        folder = self.meta_path.parent
        size, crcs = graph_checksums(folder / name)
        meta = {
            "format": FORMAT,
            "file": name,
            "model_key": self.model_key,
            "dim": self.dim,
            "generation": self._generation,
            "live": self._live,
            "capacity": self._graph.get_max_elements(),
            "M": M,
            "ef_construction": EF_CONSTRUCTION,
            "ef_curve": self.ef_curve.to_json() if self.ef_curve else None,
            "size": size,
            "crc": crcs,
        }
        atomic_write(self.meta_path, json.dumps(meta), shared=True)
        _fsync_dir(folder)
        self._curve_saved = self.ef_curve

    def _save_compact(self) -> None:
        """Bring the int8 copy to the graph's generation: commit what was appended, or
        write it again from SQLite when it was missing, stale or mostly deleted rows. Only
        the process that holds the library's writer lock (the indexer) writes it."""
        if not self.library.writing:
            return
        if self._compact_in_sync and self.compact.rows() <= 1.5 * self._live + 1024:
            if self.compact.generation() != self._generation:
                self.compact.commit(self._generation)
            return
        self.compact.reset()
        for ids, vectors in load_vectors(self.library, self.model_id):
            self.compact.append(ids, vectors)
        self._compact_in_sync = True
        self.compact.commit(self._generation)

    def repair_compact(self) -> None:
        """Write the int8 copy again from SQLite, when this process may (the library is
        writable and no indexer holds it: an indexer checks the copy itself)."""
        if self.library.read_only or self.library.writing:
            return
        try:
            with self.library.exclusive("repairing"), self._lock:
                with self.library.engine.connect() as conn:  # before the rows: never newer
                    generation = db.current_generation(conn)
                self.compact.reset()
                for ids, vectors in load_vectors(self.library, self.model_id):
                    self.compact.append(ids, vectors)
                self.compact.commit(generation)
        except ClipdeskError as exc:  # busy, or the disk cannot take it: next index does
            log.warning("the int8 copy was not written again: %s", exc)
        except OSError as exc:
            if storage_error(exc, self.library.directory) is None:
                raise
            log.warning("the int8 copy was not written again: %s", exc)

    def _remove_old_files(self, keep: str) -> None:
        """Delete superseded graphs and leftovers of crashed saves. Files written in the
        last moments may be another process's save in flight, so they stay for now."""
        now = time.time()
        folder = self.meta_path.parent
        leftovers = folder.glob(f".{self.meta_path.name}.*.tmp")  # crashed pointer writes
        for path in [*folder.glob(f"{self._stem}-*"), *leftovers]:
            with contextlib.suppress(OSError):  # gone already, or open on Windows
                if path.name != keep and now - path.stat().st_mtime > _IN_FLIGHT_S:
                    path.unlink()

    # -- use ---------------------------------------------------------------------------

    def add(self, ids: np.ndarray, vectors: np.ndarray, before: int, after: int) -> None:
        """Add vectors that one transaction committed, moving the database generation
        from ``before`` to ``after``. If the index was not at ``before``, something else
        changed too, and the next search catches up from SQLite instead."""
        with self._lock:
            if self._index is None:
                self.ensure_current()
                return
            if len(ids):
                if self._generation == before and self._calibration_due(len(ids)):
                    self._calibrate_before_adding(np.asarray(ids), np.asarray(vectors), before)
                self._grow(len(ids))
                self._graph.add_items(vectors, ids, num_threads=hnswlib_threads())
                self._live += len(ids)
                appending = self._compact_in_sync and self.library.writing
                self._compact_in_sync = False  # until the append is complete (see _catch_up)
                if appending:
                    self.compact.append(ids, vectors)
                self._compact_in_sync = appending
            self._generation = after if self._generation == before else -1

    def neighbours(self, vectors: np.ndarray, k: int, ef: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest photo ids and their cosines for each row of ``vectors``, in one
        batch through the graph with breadth ``ef`` (near-duplicates: many queries, each
        wanting only its very nearest, so a breadth far below a search's finds them)."""
        self.ensure_current()
        with self._lock:
            k = min(k, self._live)
            if k == 0 or not len(vectors):
                empty = np.zeros((len(vectors), 0))
                return empty.astype(np.int64), empty.astype(np.float32)
            self._graph.set_ef(max(ef, k))
            try:
                labels, distances = self._graph.knn_query(
                    np.ascontiguousarray(vectors, dtype=np.float32),
                    k=k,
                    num_threads=hnswlib_threads(),
                    filter=None,
                )
            finally:
                self._graph.set_ef(self.ef)
        return labels.astype(np.int64), (1.0 - distances).astype(np.float32)

    def __len__(self) -> int:
        if self._index is None and self._cold_rows:
            return self._cold_rows  # answered from the int8 copy, the graph never loaded
        return self._live

    def search(
        self,
        vector: np.ndarray,
        k: int,
        exclude: int | None = None,
        allowed: set[int] | None = None,
    ) -> list[tuple[int, float]]:
        """The ``k`` nearest photo ids by cosine similarity, best first, optionally only
        among ``allowed`` ids (the filters): ranked exactly when they are few, else
        through the graph with a breadth that grows as the filter narrows."""
        if self.cold_scan and self._index is None:
            if allowed is not None and self._exact_cold(len(allowed), k):
                return self._exact_among(vector, k, exclude, allowed)  # the graph not needed
            if allowed is None:
                cold = self._cold_search(vector, k, exclude)
                if cold is not None:
                    return cold
        self.ensure_current()
        with self._lock:
            if self._live == 0:
                return []
            want = min(k + (1 if exclude is not None else 0), self._live)
            if allowed is not None and self._exact_affordable(len(allowed), self._live, want):
                return self._exact_among(vector, k, exclude, allowed)
            selectivity = 1.0
            if allowed is None:
                ef = max(self.ef, want)
            else:
                want = min(want, len(allowed))
                selectivity = min(1.0, len(allowed) / self._live)
                # never narrower than the breadth measured for the whole graph (breadth.py)
                ef = max(self.ef, filtered_ef(want, selectivity))
            self._graph.set_ef(ef)
            started = time.perf_counter()
            try:
                labels, distances = self._graph.knn_query(
                    vector.reshape(1, -1),
                    k=want,
                    num_threads=hnswlib_threads(),
                    filter=None if allowed is None else allowed.__contains__,
                )
            except RuntimeError:  # fewer matches than asked for under the filter
                return self._exact_among(vector, k, exclude, allowed or set())
            if allowed is not None:
                units = ef / math.sqrt(selectivity)
                self.route_costs.observe("graph_unit", time.perf_counter() - started, units)
        hits = [
            (int(label), float(1.0 - dist))
            for label, dist in zip(labels[0], distances[0], strict=True)
        ]
        return [hit for hit in hits if hit[0] != exclude][:k]

    def _cold_search(
        self, vector: np.ndarray, k: int, exclude: int | None
    ) -> list[tuple[int, float]] | None:
        """Scan the int8 copy, re-rank the best candidates with SQLite's exact vectors.
        None when the copy is missing or does not match the database (use the graph)."""
        with self.library.engine.connect() as conn:
            generation = db.current_generation(conn)
        stamp = self.compact.pointer_stamp()
        try:
            snapshot = self.compact.open()
            if snapshot is None or snapshot.generation != generation:
                return None
            scores = snapshot.scores(vector)
        except DamagedCopy as exc:
            if self.compact.pointer_stamp() != stamp:
                return None  # the indexer rewrote the copy meanwhile: stale, not damaged
            log.warning(
                "the int8 copy of the vectors in %s is damaged (%s): answering from the "
                "graph, and writing the copy again from the library's database",
                self.library.index_dir,
                exc,
            )
            self.repair_compact()
            return None
        self._cold_rows = len(snapshot)
        if not len(snapshot):
            return []
        want = min(len(scores), max(COLD_CANDIDATES, 4 * (k + 1)))
        best = np.argpartition(-scores, want - 1)[:want]
        candidates = sorted(set(snapshot.ids[best].tolist()) - {exclude})
        hits: list[tuple[int, float]] = []
        for ids, vectors in load_vectors(self.library, self.model_id, candidates):
            exact = vectors @ vector.astype(np.float32)
            hits += zip(ids.tolist(), exact.tolist(), strict=True)
        hits.sort(key=lambda hit: -hit[1])
        return hits[:k]

    def _exact_affordable(self, allowed: int, live: int, want: int) -> bool:
        """Whether ranking ``allowed`` photos exactly is estimated cheaper than the graph
        (with or without the int8 copy to shortlist them)."""
        copy = self._copy_for_filters() is not None
        return exact_filter(allowed, live, want, copy, self.route_costs)

    def _exact_cold(self, allowed: int, k: int) -> bool:
        """In a one-shot process before the graph is loaded: whether ranking ``allowed``
        photos exactly is estimated cheaper than loading the graph (its file read at
        GRAPH_LOAD_BYTES_PER_S) to search it."""
        if self._copy_for_filters() is not None:
            return True  # a shortlist of even every photo's codes beats the graph's load
        path = self.index_path
        try:
            load = path.stat().st_size / GRAPH_LOAD_BYTES_PER_S if path else 0.0
        except OSError:
            load = 0.0
        return self.route_costs.exact(allowed, allowed, copy=False) <= load

    def _copy_for_filters(self) -> tuple[Snapshot, np.ndarray, np.ndarray] | None:
        """The int8 copy with its ids sorted (kept while its pointer stays the same), or
        None where there is none. A stale copy still serves: ids it lacks are scored
        exactly, rows of deleted photos are never among the allowed."""
        stamp = self.compact.pointer_stamp()
        if stamp is None:
            return None
        if self._filter_copy is None or self._filter_copy[0] != stamp:
            try:
                snapshot = self.compact.open()
            except DamagedCopy:
                snapshot = None
            if snapshot is None:
                return None
            ids = np.asarray(snapshot.ids)
            rows = np.argsort(ids, kind="stable")
            self._filter_copy = (stamp, snapshot, ids[rows], rows)
        _, snapshot, keys, rows = self._filter_copy
        return snapshot, keys, rows

    def _exact_among(
        self, vector: np.ndarray, k: int, exclude: int | None, allowed: set[int]
    ) -> list[tuple[int, float]]:
        """The exact top ``k`` among ``allowed``: the int8 copy shortlists, SQLite's
        vectors score (only photos with a vector under this model, not failed)."""
        ids = np.fromiter(allowed, dtype=np.int64, count=len(allowed))
        if exclude is not None:
            ids = ids[ids != exclude]
        ids.sort()
        copy = self._copy_for_filters()
        candidates = max(COLD_CANDIDATES, 4 * (k + 1))
        if copy is not None and len(ids) > candidates:
            started = time.perf_counter()
            ids = shortlist(copy[1], copy[2], copy[0], ids, vector, candidates)
            self.route_costs.observe("score_row", time.perf_counter() - started, len(allowed))
        started = time.perf_counter()
        hits: list[tuple[int, float]] = []
        for found, vectors in load_vectors(self.library, self.model_id, ids.tolist()):
            scores = vectors @ np.asarray(vector, dtype=np.float32)
            hits += zip(found.tolist(), scores.tolist(), strict=True)
        self.route_costs.observe("read_row", time.perf_counter() - started, len(ids))
        hits.sort(key=lambda hit: (-hit[1], hit[0]))
        return hits[:k]
