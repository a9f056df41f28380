"""Finding duplicates in a library: exact copies by fingerprint, near-duplicates by the
stored vectors (one nearest-neighbour pass through the HNSW graph, kept for regrouping at
any threshold), bursts by their capture times, and the photo to keep in each group."""

from __future__ import annotations

import itertools
import os
import threading
from collections import Counter
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass, replace

import numpy as np
from sqlalchemy import func, select

from clipdesk.errors import ClipdeskError
from clipdesk.library import Library, db
from clipdesk.library.queries import in_chunks, under_folder
from clipdesk.library.tags import AUTO, tags_by_photo
from clipdesk.progress import CancelToken, Progress, RateMeter
from clipdesk.search.vector_index import VectorIndex, load_vectors

from .grouping import NEIGHBOURS, NeighbourLists, Threshold, derived_threshold, near_groups
from .keep import Facts, exif_fields, looks_edited, ranked, reasons, sharpness

# The graph's breadth for the neighbour pass: a near-duplicate is a photo's very nearest,
# found at a small breadth (bench/bench_duplicates.py measures the recall of planted pairs).
KNN_EF = 64
# The most copies of one content looked past in a photo's neighbour list.
_COPIES_LOOKED_PAST = 32
# Near-duplicates with camera times at most this far apart, frame to frame, are a burst
# (a phone's burst mode shoots several frames a second; a hand pressing again, a second).
BURST_GAP_S = 2.0


@dataclass(frozen=True)
class Member:
    """A photo in a group: its facts, its merit as the one to keep, its similarity to
    the group's suggested photo (1.0 for an exact copy)."""

    facts: Facts
    score: float
    similarity: float
    keep: bool
    kept_fingerprint: str  # the suggested photo's content (an exact copy of it shares it)
    # another member of the group has this one's content (byte for byte the same photo)
    exact_copy: bool = False
    # the user's tags (confirmed, added, imported) this photo has and the kept one lacks
    tags_lost: tuple[str, ...] = ()

    @property
    def photo_id(self) -> int:
        return self.facts.photo_id

    @property
    def path(self) -> str:
        return self.facts.path

    def as_json(self) -> dict[str, object]:
        f = self.facts
        return {
            "path": f.path,
            "score": self.score,
            "keep": self.keep,
            "photo_id": f.photo_id,
            "similarity": round(self.similarity, 4),
            "size": f.size,
            "width": f.width,
            "height": f.height,
            "taken_at": f.taken_at,
            "camera": f.camera,
            "sharpness": None if f.sharpness is None else round(f.sharpness, 4),
            "exif_fields": f.exif_fields,
            "edited": f.edited,
            "exact_copy": self.exact_copy,
            "tags_lost": list(self.tags_lost),
        }


@dataclass(frozen=True)
class DuplicateGroup:
    """Photos that are copies or near-copies of one another, the suggested one first.
    ``key``: the smallest photo id in it (stable across regroupings, for a view's choice)."""

    key: int
    members: list[Member]
    exact: bool  # every photo has the same content
    burst: bool  # near-duplicates taken within seconds of each other
    why: list[str]  # why the first is suggested

    @property
    def kept(self) -> Member:
        return self.members[0]

    @property
    def kind(self) -> str:
        """The kind of group: "exact copies" (one content), "burst", "near-duplicates"
        (no two members share a content) or "mixed" (exact copies and near-duplicates)."""
        if self.exact:
            return "exact copies"
        if self.burst:
            return "burst"
        return "mixed" if any(m.exact_copy for m in self.members) else "near-duplicates"

    def to_drop(self, keep: Iterable[int] | None = None) -> list[Member]:
        """The members to trash when ``keep`` (photo ids; default the suggestion) stay;
        at least one photo of a group always stays."""
        keeping = {self.kept.photo_id} if keep is None else set(keep)
        if not keeping & {m.photo_id for m in self.members}:
            raise ClipdeskError("keep at least one photo of each group")
        return [m for m in self.members if m.photo_id not in keeping]

    def freed(self, keep: Iterable[int] | None = None) -> int:
        """Bytes freed by trashing what is not kept."""
        return sum(m.facts.size for m in self.to_drop(keep))

    def as_json(self) -> dict[str, object]:
        return {
            "key": self.key,
            "exact": self.exact,
            "burst": self.burst,
            "kind": self.kind,
            "why": self.why,
            "freed": self.freed(),
            "photos": [m.as_json() for m in self.members],
        }


@dataclass
class DuplicateReport:
    """The groups at one threshold. ``threshold`` says how it was chosen (None: exact
    copies only); ``photos``: how many photos were compared."""

    groups: list[DuplicateGroup]
    threshold: Threshold | None
    photos: int

    @property
    def freed(self) -> int:
        return sum(g.freed() for g in self.groups)

    def as_json(self) -> dict[str, object]:
        return {
            "threshold": None if self.threshold is None else self.threshold.value,
            "threshold_how": "exact copies only" if self.threshold is None else self.threshold.how,
            "photos": self.photos,
            "freed": self.freed,
            "groups": [g.as_json() for g in self.groups],
        }


def neighbour_pass(
    library: Library,
    index: VectorIndex,
    cancel: CancelToken,
    k: int = NEIGHBOURS,
    ef: int = KNN_EF,
    chunk: int = 4096,
) -> Generator[Progress, None, NeighbourLists | None]:
    """Each content's ``k`` nearest other contents, through the graph in batches (no
    all-pairs pass); copies of one content share a vector, so one photo per content is
    asked and copies are looked past. Yields progress; returns None when cancelled."""
    with library.session() as s:
        rows = s.execute(
            select(db.Photo.id, db.Photo.fingerprint)
            .join(db.Embedding, db.Embedding.fingerprint == db.Photo.fingerprint)
            .where(db.Embedding.model_id == index.model_id, db.Photo.error.is_(None))
            .order_by(db.Photo.id)
        ).all()
    empty = NeighbourLists(np.zeros(0, np.int64), np.zeros((0, 0), np.int64), np.zeros((0, 0)))
    if not rows:
        return empty
    first: dict[str, int] = {}
    copies: dict[int, int] = {}
    top = max(pid for pid, _ in rows)
    rep_of = np.full(top + 1, -1, dtype=np.int64)
    for pid, digest in rows:
        rep = first.setdefault(digest, pid)
        rep_of[pid] = rep
        copies[rep] = copies.get(rep, 0) + 1
    is_rep = np.zeros(top + 1, dtype=bool)
    is_rep[list(first.values())] = True
    asked = k + 1 + min(max(copies.values()) - 1, _COPIES_LOOKED_PAST)
    meter = RateMeter(total=len(first))
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    done = 0
    pending_ids: list[np.ndarray] = []
    pending_vectors: list[np.ndarray] = []

    def ask(ids: np.ndarray, vectors: np.ndarray) -> None:
        labels, sims = index.neighbours(vectors, asked, ef)
        inside = (labels >= 0) & (labels <= top)
        mapped = np.where(inside, rep_of[np.clip(labels, 0, top)], -1)
        mapped[mapped == ids[:, None]] = -1  # itself, and its own copies
        for j in range(1, mapped.shape[1]):  # a content once per list (its copies share it)
            seen = (mapped[:, j : j + 1] == mapped[:, :j]).any(axis=1)
            mapped[seen & (mapped[:, j] >= 0), j] = -1
        order = np.argsort(mapped < 0, axis=1, kind="stable")[:, :k]
        neighbours = np.take_along_axis(mapped, order, axis=1)
        similarities = np.take_along_axis(sims, order, axis=1)
        similarities[neighbours < 0] = -1.0
        parts.append((ids, neighbours, similarities))

    for ids, vectors in load_vectors(library, index.model_id):
        known = ids <= top  # a photo indexed since the rows were read waits for the next pass
        wanted = known.copy()
        wanted[known] = is_rep[ids[known]]
        pending_ids.append(ids[wanted])
        pending_vectors.append(vectors[wanted])
        if sum(len(p) for p in pending_ids) < chunk:
            continue
        batch_ids, batch_vectors = np.concatenate(pending_ids), np.concatenate(pending_vectors)
        pending_ids.clear()
        pending_vectors.clear()
        for start in range(0, len(batch_ids), chunk):
            ask(batch_ids[start : start + chunk], batch_vectors[start : start + chunk])
            done += len(batch_ids[start : start + chunk])
            yield meter.report("duplicates", done, message="comparing photos")
            meter.resumed()
            if cancel.cancelled:
                return None
    if pending_ids and sum(len(p) for p in pending_ids):
        ask(np.concatenate(pending_ids), np.concatenate(pending_vectors))
        done = meter.total
        yield meter.report("duplicates", done, message="comparing photos")
    if not parts:
        return empty
    width = min(p[1].shape[1] for p in parts)
    return NeighbourLists(
        np.concatenate([p[0] for p in parts]),
        np.concatenate([p[1][:, :width] for p in parts]),
        np.concatenate([p[2][:, :width] for p in parts]),
    )


def is_burst(group: list[Facts]) -> bool:
    """Near-duplicates (not copies) whose camera times follow one another within
    BURST_GAP_S."""
    if len({f.fingerprint for f in group}) < 2 or not all(f.taken_from_exif for f in group):
        return False
    times = sorted(f.taken_at for f in group)
    return all(b - a <= BURST_GAP_S for a, b in itertools.pairwise(times))


def _is_under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


class DuplicateFinder:
    """One library's duplicates: the neighbour lists of its serving model, kept while
    the library does not change (a regroup at another threshold reuses them), and the
    facts of the photos seen in groups (a decode each, once)."""

    def __init__(self, library: Library) -> None:
        self.library = library
        self._lock = threading.RLock()
        self._lists: NeighbourLists | None = None
        self._lists_key: tuple[str, int] | None = None
        self._facts: dict[tuple[int, str, int, int], Facts] = {}

    def _generation(self) -> int:
        with self.library.engine.connect() as conn:
            return db.current_generation(conn)

    def current(self, index: VectorIndex) -> NeighbourLists | None:
        """The neighbour lists, if they match the library as it is now."""
        with self._lock:
            if self._lists_key == (index.model_key, self._generation()):
                return self._lists
            return None

    def compare(self, index: VectorIndex, cancel: CancelToken | None = None) -> Iterator[Progress]:
        """Bring the neighbour lists up to date (nothing to do when they are)."""
        cancel = cancel or CancelToken()
        with self._lock:
            if self.current(index) is not None:
                return
            key = (index.model_key, self._generation())
            lists = yield from neighbour_pass(self.library, index, cancel)
            if lists is not None:
                self._lists, self._lists_key = lists, key

    def report(
        self,
        index: VectorIndex | None,
        folder: str | None = None,
        threshold: float | None = None,
        exact: bool = False,
    ) -> DuplicateReport:
        """The groups under ``folder`` (a normalised path; None: the library): exact
        copies, and unless ``exact`` near-duplicates at ``threshold`` (None: derived from
        the library). Needs :meth:`compare` done for near-duplicates."""
        if threshold is not None and not 0.0 < threshold <= 1.0:
            raise ClipdeskError(
                f"the threshold is a cosine similarity, above 0 up to 1 (not {threshold})"
            )
        if folder is not None and not os.path.isdir(folder):
            raise ClipdeskError(f"no such folder: {folder}")
        by_content = self._exact_copies()
        groups: list[list[Facts]] = []
        chosen: Threshold | None = None
        photos = self._photo_count(folder)
        grouped: set[str] = set()
        vectors: dict[int, np.ndarray] = {}
        if not exact:
            if index is None:
                raise ClipdeskError("near-duplicates need the library indexed")
            lists = self.current(index)
            if lists is None:
                raise ClipdeskError("compare the photos first (DuplicateFinder.compare)")
            derived = derived_threshold(lists)
            chosen = derived if threshold is None else Threshold(threshold, False, "given")
            content_groups = near_groups(
                lists,
                chosen.value,
                lambda ids: self._best_content(ids),
                lambda ids: self._vectors(index, ids, vectors),
            )
            fingerprints = self._fingerprints([i for g in content_groups for i in g])
            by_content.update(self._photos_of({fingerprints[i] for g in content_groups for i in g}))
            for group in content_groups:
                digests = [fingerprints[i] for i in group]
                grouped.update(digests)
                groups.append([f for d in digests for f in by_content.get(d, [])])
        groups += [
            members for d, members in by_content.items() if d not in grouped and len(members) > 1
        ]
        result = []
        for members in groups:
            if folder is not None:
                members = [f for f in members if _is_under(f.path, folder)]
            members = [f for f in members if os.path.isfile(f.path)]  # gone, or unplugged
            if len(members) < 2:
                continue
            result.append(self._group(index, members, vectors))
        result.sort(key=lambda g: g.kept.path)
        return DuplicateReport(result, chosen, photos)

    # -- the parts -------------------------------------------------------------------

    def _group(
        self, index: VectorIndex | None, members: list[Facts], vectors: dict[int, np.ndarray]
    ) -> DuplicateGroup:
        full = [self._full_facts(f) for f in members]
        order = ranked(full)
        kept = order[0][0]
        tied = len(order) > 1 and order[1][1] >= order[0][1]
        why = reasons(kept, [f for f, _ in order[1:]], tied)
        exact = len({f.fingerprint for f in full}) == 1
        similar = {kept.fingerprint: 1.0}
        shared = Counter(f.fingerprint for f in full)
        lost = self._tags_lost(index, kept, [f for f, _ in order[1:]])
        if not exact and index is not None:
            reps = self._rep_ids({f.fingerprint for f in full})
            found = self._vectors(index, sorted(reps.values()), vectors)
            by_digest = dict(zip(sorted(reps, key=reps.__getitem__), found, strict=True))
            anchor = by_digest[kept.fingerprint]
            similar = {d: float(v @ anchor) for d, v in by_digest.items()}
        out = [
            Member(
                f,
                score,
                similar.get(f.fingerprint, 1.0),
                i == 0,
                kept.fingerprint,
                exact_copy=shared[f.fingerprint] > 1,
                tags_lost=lost.get(f.photo_id, ()),
            )
            for i, (f, score) in enumerate(order)
        ]
        return DuplicateGroup(min(f.photo_id for f in full), out, exact, is_burst(full), why)

    def _tags_lost(
        self, index: VectorIndex | None, kept: Facts, others: list[Facts]
    ) -> dict[int, tuple[str, ...]]:
        """For each of ``others``, the tags the user gave it (confirmed, added by hand,
        imported) that ``kept`` has not, by any source."""
        model_id = None if index is None else index.model_id
        kept_tags = tags_by_photo(self.library, model_id, [kept.photo_id]).get(kept.photo_id, [])
        has = {t.label for t in kept_tags}
        theirs = tags_by_photo(self.library, None, [o.photo_id for o in others])
        out: dict[int, tuple[str, ...]] = {}
        for pid, tags in theirs.items():
            missing = tuple(t.label for t in tags if t.source != AUTO and t.label not in has)
            if missing:
                out[pid] = missing
        return out

    def _full_facts(self, f: Facts) -> Facts:
        key = (f.photo_id, f.path, f.size, f.mtime_ns)
        with self._lock:
            known = self._facts.get(key)
        if known is None:
            known = replace(f, sharpness=sharpness(f.path), exif_fields=exif_fields(f.path))
            with self._lock:
                self._facts[key] = known
        return known

    def _best_content(self, ids: list[int]) -> int:
        """Of contents (photo ids), the one whose best photo the group keeps."""
        digests = self._fingerprints(ids)
        photos = self._photos_of(set(digests.values()))
        candidates = [
            self._full_facts(f)
            for d in digests.values()
            for f in photos.get(d, [])
            if os.path.isfile(f.path)
        ]
        if not candidates:
            return min(ids)
        best = ranked(candidates)[0][0]
        return next(i for i, d in digests.items() if d == best.fingerprint)

    def _vectors(
        self, index: VectorIndex, ids: list[int], cache: dict[int, np.ndarray]
    ) -> np.ndarray:
        missing = sorted({i for i in ids if i not in cache})
        if missing:
            for found, vectors in load_vectors(self.library, index.model_id, missing):
                cache.update(zip(found.tolist(), vectors, strict=True))
        return np.stack([cache[i] for i in ids])

    def _photo_count(self, folder: str | None = None) -> int:
        """The photos compared: the library's, or those under ``folder``."""
        query = select(func.count(db.Photo.id)).where(db.Photo.error.is_(None))
        if folder is not None:
            query = query.where(under_folder(folder))
        with self.library.session() as s:
            return int(s.scalar(query) or 0)

    def _exact_copies(self) -> dict[str, list[Facts]]:
        """Every content that more than one photo has, with those photos."""
        with self.library.session() as s:
            digests = set(
                s.scalars(
                    select(db.Photo.fingerprint)
                    .where(db.Photo.error.is_(None), db.Photo.fingerprint != "")
                    .group_by(db.Photo.fingerprint)
                    .having(func.count(db.Photo.id) > 1)
                )
            )
        return self._photos_of(digests)

    def _fingerprints(self, ids: list[int]) -> dict[int, str]:
        out: dict[int, str] = {}
        with self.library.session() as s:
            for chunk in in_chunks(sorted(set(ids))):
                out.update(
                    s.execute(
                        select(db.Photo.id, db.Photo.fingerprint).where(db.Photo.id.in_(chunk))
                    ).all()
                )
        return out

    def _rep_ids(self, digests: set[str]) -> dict[str, int]:
        """The first photo of each content (the one its neighbour list is under)."""
        with self.library.session() as s:
            rows = s.execute(
                select(db.Photo.fingerprint, func.min(db.Photo.id))
                .where(db.Photo.fingerprint.in_(sorted(digests)), db.Photo.error.is_(None))
                .group_by(db.Photo.fingerprint)
            ).all()
            return dict(rows)

    def _photos_of(self, digests: set[str]) -> dict[str, list[Facts]]:
        out: dict[str, list[Facts]] = {}
        with self.library.session() as s:
            for chunk in in_chunks(sorted(digests)):
                for p in s.scalars(
                    select(db.Photo)
                    .where(db.Photo.fingerprint.in_(chunk), db.Photo.error.is_(None))
                    .order_by(db.Photo.id)
                ):
                    out.setdefault(p.fingerprint, []).append(_facts_of(p))
        return out


def _facts_of(p: db.Photo) -> Facts:
    return Facts(
        photo_id=p.id,
        path=p.path,
        size=p.size,
        mtime_ns=p.mtime_ns,
        width=p.width,
        height=p.height,
        taken_at=p.taken_at,
        taken_from_exif=p.taken_from_exif,
        camera=p.camera,
        fingerprint=p.fingerprint,
        sharpness=None,
        exif_fields=0,
        edited=looks_edited(p.path),
    )
