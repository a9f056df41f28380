"""Listing photos and describing one: what a photo browser shows beside search results.

Plain Python; queries select only the columns they need, so listing 100,000 photos is
one SQL query and no ORM objects.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from sqlalchemy import ColumnElement, UnaryExpression, select
from sqlalchemy.orm import InstrumentedAttribute

from clipdesk.imaging import camera_name
from clipdesk.library import Library, db
from clipdesk.library.queries import under_folder
from clipdesk.library.scanning import normalise_folder
from clipdesk.library.tags import Tag, tags_by_photo

_EXIF_MAKE = 0x010F
_EXIF_MODEL = 0x0110
_EXIF_IFD = 0x8769
_EXPOSURE_TIME = 0x829A
_F_NUMBER = 0x829D
_ISO = 0x8827
_FOCAL_LENGTH = 0x920A


@dataclass(frozen=True)
class PhotoRef:
    """Enough to show a photo in a grid: the thumbnail is keyed by ``fingerprint``."""

    photo_id: int
    path: str
    fingerprint: str
    width: int | None
    height: int | None
    taken_at: float


# The columns of a PhotoRef, in its field order.
_REF_COLUMNS = (
    db.Photo.id,
    db.Photo.path,
    db.Photo.fingerprint,
    db.Photo.width,
    db.Photo.height,
    db.Photo.taken_at,
)


def _readable(folder: str | None) -> ColumnElement[bool]:
    """The photos a listing shows: readable ones (under ``folder``)."""
    readable = db.Photo.error.is_(None)
    return readable if folder is None else readable & under_folder(folder)


def _by_date(newest_first: bool) -> tuple[UnaryExpression[float], InstrumentedAttribute[int]]:
    """By date taken, then id: one order for both listings."""
    return (db.Photo.taken_at.desc() if newest_first else db.Photo.taken_at.asc()), db.Photo.id


def list_photos(
    library: Library,
    folder: str | None = None,
    photo_ids: set[int] | None = None,
    newest_first: bool = True,
) -> list[PhotoRef]:
    """The readable photos (under ``folder``; among ``photo_ids``), by date taken."""
    query = select(*_REF_COLUMNS).where(_readable(folder)).order_by(*_by_date(newest_first))
    with library.session() as s:
        rows = s.execute(query).all()
    refs = [PhotoRef(*row) for row in rows]
    if photo_ids is not None:
        refs = [ref for ref in refs if ref.photo_id in photo_ids]
    return refs


def list_photo_ids(
    library: Library,
    folder: str | None = None,
    photo_ids: set[int] | None = None,
    newest_first: bool = True,
) -> np.ndarray:
    """The ids of :func:`list_photos`, in the same order, as one int64 array: what a grid
    of a million photos holds (rows are fetched when shown, by :func:`photo_refs`)."""
    query = select(db.Photo.id).where(_readable(folder)).order_by(*_by_date(newest_first))
    with library.engine.connect() as conn:
        ids = np.fromiter((row[0] for row in conn.execute(query)), dtype=np.int64)
    if photo_ids is not None:
        ids = ids[np.isin(ids, np.fromiter(photo_ids, dtype=np.int64, count=len(photo_ids)))]
    return ids


def find_photo(library: Library, path: str | Path) -> db.Photo | None:
    """The library's photo at ``path`` (as given, or with its links resolved), or None."""
    raw = os.path.abspath(os.path.expanduser(os.fspath(path)))
    candidates = list(dict.fromkeys([raw, normalise_folder(path)]))
    with library.session() as s:
        return s.scalar(select(db.Photo).where(db.Photo.path.in_(candidates)).limit(1))


def photo_refs(library: Library, photo_ids: list[int]) -> dict[int, PhotoRef]:
    query = select(*_REF_COLUMNS).where(db.Photo.id.in_(photo_ids))
    with library.session() as s:
        return {row[0]: PhotoRef(*row) for row in s.execute(query).all()}


@dataclass
class PhotoDetails:
    """What the details panel shows about one photo."""

    photo_id: int
    path: str
    size_bytes: int
    width: int | None
    height: int | None
    taken_at: float
    taken_from_exif: bool
    error: str | None
    exists: bool
    camera: str | None = None
    exposure: str | None = None
    tags: list[Tag] = field(default_factory=list)  # the user's first, then the model's

    @property
    def taken_text(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(self.taken_at))
        return when if self.taken_from_exif else f"{when} (file date)"


def _camera_of(path: str) -> tuple[str | None, str | None]:
    """Camera make/model and exposure from EXIF (header only; never raises)."""
    try:
        with Image.open(path) as img:
            exif = img.getexif()
    except Exception:
        return None, None
    if not exif:
        return None, None
    camera = camera_name(exif.get(_EXIF_MAKE, ""), exif.get(_EXIF_MODEL, "")) or None
    parts = []
    try:
        sub = exif.get_ifd(_EXIF_IFD)
    except Exception:
        sub = {}
    # Cameras write 0 (or 0/0) for what they do not know: shown as unknown, not "f/0.0"
    if (seconds := _known(sub.get(_EXPOSURE_TIME))) is not None:
        parts.append(f"1/{round(1 / seconds)} s" if seconds < 1 else f"{seconds:g} s")
    if (f_number := _known(sub.get(_F_NUMBER))) is not None:
        parts.append(f"f/{f_number:.1f}")
    if (iso := _known(sub.get(_ISO))) is not None:
        parts.append(f"ISO {iso:g}")
    if (focal := _known(sub.get(_FOCAL_LENGTH))) is not None:
        parts.append(f"{focal:g} mm")
    return camera, ", ".join(parts) or None


def _known(value: object) -> float | None:
    """An EXIF number when it is a real, positive one (the first of a list, as ISO may be)."""
    if isinstance(value, tuple | list):
        value = value[0] if value else None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def photo_details(library: Library, photo_id: int, model_id: int | None) -> PhotoDetails | None:
    """Everything known about one photo, its tags under ``model_id`` included."""
    with library.session() as s:
        photo = s.get(db.Photo, photo_id)
        if photo is None:
            return None
        tags = tags_by_photo(library, model_id, [photo_id]).get(photo_id, [])
        details = PhotoDetails(
            photo_id=photo.id,
            path=photo.path,
            size_bytes=photo.size,
            width=photo.width,
            height=photo.height,
            taken_at=photo.taken_at,
            taken_from_exif=photo.taken_from_exif,
            error=photo.error,
            exists=os.path.exists(photo.path),
            tags=tags,
        )
    if details.exists:
        details.camera, details.exposure = _camera_of(details.path)
    return details
