"""Smart albums: saved searches with a name (``db.Album``), and their counts.

An album keeps the query as text (terms and filters, :mod:`clipdesk.search.query`),
whether the relevance cutoff applies, the order and the most photos shown. The facade runs
it again each time it is shown (``Clipdesk.album``), so it follows the photos as they are
indexed, moved or deleted, and a model switch.

The sidebar shows every album's count. Running each album's search on every refresh would
cost one search per album, so :class:`AlbumCounts` keeps each count with the
:func:`library_state` it was found in and finds it again only once that state changed.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from sqlalchemy import bindparam, select, text
from sqlalchemy.orm import Session

from clipdesk.errors import ClipdeskError
from clipdesk.library import Library, db
from clipdesk.search.query import ParsedQuery, format_query, parse_query
from clipdesk.search.ranking import SORTS, Sort

NAME_LIMIT = 200  # characters in an album's name


class UnknownAlbumError(ClipdeskError):
    """No album has that name."""


@dataclass(frozen=True)
class SavedAlbum:
    """An album as saved: ``query`` as the search field writes it; ``k`` None: the
    search's own limit."""

    name: str
    query: str
    cutoff: bool
    sort: Sort
    k: int | None
    created_at: float
    updated_at: float

    @property
    def parsed(self) -> ParsedQuery:
        return parse_query(self.query)

    def as_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "query": self.query,
            "cutoff": "auto" if self.cutoff else "none",
            "sort": self.sort,
            "k": self.k,
        }


@dataclass(frozen=True)
class AlbumCount:
    """An album and how many photos it shows now; ``count`` None with ``error`` where its
    search cannot run (a folder or a label it names is gone)."""

    album: SavedAlbum
    count: int | None
    error: str | None = None

    def as_json(self) -> dict[str, object]:
        return {**self.album.as_json(), "count": self.count, "error": self.error}


def _album(row: db.Album) -> SavedAlbum:
    sort: Sort = next((known for known in SORTS if known == row.sort), "relevance")
    return SavedAlbum(
        row.name, row.query, bool(row.cutoff), sort, row.k, row.created_at, row.updated_at
    )


def album_name(name: str) -> str:
    """``name`` as saved (spaces around it dropped), or an error saying what is wrong."""
    cleaned = " ".join(name.split())
    if not cleaned:
        raise ClipdeskError("an album needs a name")
    if len(cleaned) > NAME_LIMIT:
        raise ClipdeskError(f"an album's name has at most {NAME_LIMIT} characters")
    return cleaned


def _is_relative_path(value: str) -> bool:
    # as the folder filter tells a path from a folder's name (search.filters)
    return not os.path.isabs(os.path.expanduser(value)) and (
        os.sep in value or "/" in value or value.startswith(".")
    )


def album_query(query: str, base: Path | None = None) -> str:
    """The query an album keeps: checked by reading it (a QueryError says what to
    correct); relative image paths and folders are made absolute from ``base`` (the
    working folder), since the album is run again from anywhere. Otherwise as typed."""
    parsed = parse_query(query)
    if not parsed.terms and parsed.filters.is_empty():
        raise ClipdeskError("an album needs a query: words, an image, or filters")
    start = base or Path.cwd()
    terms = tuple(
        replace(term, value=os.fspath(term.path(start)))
        if term.kind == "image" and _is_relative_path(term.value)
        else term
        for term in parsed.terms
    )
    folders = tuple(
        os.path.normpath(start / folder) if _is_relative_path(folder) else folder
        for folder in parsed.filters.folders
    )
    resolved = ParsedQuery(terms, replace(parsed.filters, folders=folders))
    if resolved == parsed:
        return " ".join(query.split())
    try:
        return format_query(resolved)
    except ValueError as exc:  # a path no query text can hold (quotes in it)
        raise ClipdeskError(f"cannot keep this query in an album: {exc}") from exc


def _row(s: Session, name: str) -> db.Album | None:
    return s.scalar(select(db.Album).where(db.Album.name == name))


def save_album(
    library: Library,
    name: str,
    query: str,
    *,
    cutoff: bool = True,
    sort: Sort = "relevance",
    k: int | None = None,
    replace_existing: bool = False,
) -> SavedAlbum:
    """Save a search as an album; an album of that name is replaced only when told
    (``replace_existing``), else an error says so."""
    name = album_name(name)
    stored = album_query(query)
    if sort not in SORTS:
        raise ClipdeskError(f"unknown order {sort!r} (use {', '.join(SORTS)})")
    if k is not None and k < 1:
        raise ClipdeskError(f"an album shows at least 1 photo, not {k}")
    now = time.time()
    with library.session() as s:
        row = _row(s, name)
        if row is not None and not replace_existing:
            raise ClipdeskError(
                f"an album named {name!r} exists already (replace it, or choose another name)"
            )
        if row is None:
            row = db.Album(name=name, created_at=now)
            s.add(row)
        row.query, row.cutoff, row.sort, row.k, row.updated_at = stored, cutoff, sort, k, now
        s.commit()
        return _album(row)


def list_albums(library: Library) -> list[SavedAlbum]:
    """Every album, by name (ignoring case)."""
    with library.session() as s:
        rows = list(s.scalars(select(db.Album)))
    return sorted((_album(r) for r in rows), key=lambda a: (a.name.casefold(), a.name))


def get_album(library: Library, name: str) -> SavedAlbum:
    with library.session() as s:
        row = _row(s, name) or _row(s, " ".join(name.split()))
        if row is None:
            raise UnknownAlbumError(f"no album named {name!r} (see `clipdesk albums list`)")
        return _album(row)


def rename_album(library: Library, old: str, new: str) -> SavedAlbum:
    new = album_name(new)
    with library.session() as s:
        row = _row(s, old)
        if row is None:
            raise UnknownAlbumError(f"no album named {old!r} (see `clipdesk albums list`)")
        if new != row.name and _row(s, new) is not None:
            raise ClipdeskError(f"an album named {new!r} exists already")
        row.name, row.updated_at = new, time.time()
        s.commit()
        return _album(row)


def delete_album(library: Library, name: str) -> None:
    """Forget the album (its photos are only ever searched, never touched)."""
    with library.session() as s:
        row = _row(s, name)
        if row is None:
            raise UnknownAlbumError(f"no album named {name!r} (see `clipdesk albums list`)")
        s.delete(row)
        s.commit()


def library_state(
    library: Library, serving_key: str | None, tags: Sequence[str] = ()
) -> tuple[object, ...]:
    """What an album's photos depend on, cheaply read: the database generation (bumped by
    triggers when photos are added, moved, changed or deleted and when vectors come or go:
    how the vector index knows it is stale), the serving model, the folders that cannot be
    read now, and the tags named ``tags`` (which the generation does not follow)."""
    with library.session() as s:
        generation = s.scalar(select(db.Generation.value).where(db.Generation.id == 1))
        unavailable = tuple(
            tuple(row) for row in s.execute(select(db.Root.id, db.Root.unavailable))
        )
        tagged: tuple[object, ...] = ()
        if tags:
            labels = tuple(
                s.scalars(select(db.Label.id).where(db.Label.name.in_(tags)).order_by(db.Label.id))
            )
            # Read from the label index alone (50 ms for 100,000 tagged photos). A retag
            # deletes and inserts rows: the sum of their row ids and labels changes too.
            rows = s.execute(
                text(
                    "SELECT count(*), max(rowid), sum(rowid * 64 + label_id) FROM photo_tags "
                    "WHERE label_id IN :labels"
                ).bindparams(bindparam("labels", expanding=True)),
                {"labels": list(labels)},
            ).one()
            tagged = (labels, *rows)
    return (generation, serving_key, unavailable, tagged)


class AlbumCounts:
    """Each album's count with the state it was found in (thread-safe: the window asks
    from its worker threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, tuple[SavedAlbum, tuple[object, ...], AlbumCount]] = {}

    def get(self, album: SavedAlbum, state: tuple[object, ...]) -> AlbumCount | None:
        with self._lock:
            known = self._counts.get(album.name)
        if known is None or known[0] != album or known[1] != state:
            return None
        return known[2]

    def put(self, state: tuple[object, ...], count: AlbumCount) -> AlbumCount:
        with self._lock:
            self._counts[count.album.name] = (count.album, state, count)
        return count

    def forget(self, name: str) -> None:
        with self._lock:
            self._counts.pop(name, None)


def album_tags(album: SavedAlbum) -> tuple[str, ...]:
    """The tags an album's filters name (its count follows them)."""
    try:
        return album.parsed.filters.tags
    except ClipdeskError:  # a query saved by a newer clipdesk: its search will say so
        return ()
