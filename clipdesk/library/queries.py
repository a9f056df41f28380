"""Query pieces the rooms above the library share: the photos under a folder, and long
``IN (...)`` lists sent in chunks."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import TypeVar

from sqlalchemy import ColumnElement

from clipdesk.library import db

T = TypeVar("T")

IN_CHUNK = 500  # values per "IN (...)" statement, well under SQLite's variable limit


def in_chunks(values: Sequence[T]) -> Iterator[Sequence[T]]:
    """``values`` in slices of at most IN_CHUNK, one per ``IN (...)`` statement."""
    for start in range(0, len(values), IN_CHUNK):
        yield values[start : start + IN_CHUNK]


def under_folder(folder: str) -> ColumnElement[bool]:
    """A SQL condition: the photo's path lies inside ``folder`` (a byte-range scan)."""
    base = folder.rstrip(os.sep) + os.sep
    upper = base[:-1] + chr(ord(os.sep) + 1)
    return (db.Photo.path >= base) & (db.Photo.path < upper)
