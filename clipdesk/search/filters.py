"""Which photos a search may return: the filters of a query (folder, dates, file type,
orientation, size, camera) turned into the set of photo ids the nearest-neighbour search keeps.

Tags are the tagging room's (the facade intersects them); everything here reads only the
``photos`` table, in one SQL statement.
"""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import ColumnElement, false, func, or_, select

from clipdesk.errors import ClipdeskError
from clipdesk.library import Library, db
from clipdesk.library.queries import under_folder
from clipdesk.search.query import Filters


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _folder_condition(library: Library, value: str) -> ColumnElement[bool]:
    """``in:VALUE``: a folder given by its path (absolute, ``~``, or relative to the
    working folder), or by its name: every folder of the library called that (any case),
    with what is below it. A folder the library does not hold is an error."""
    candidate = Path(os.path.expanduser(value))
    with library.session() as s:
        roots = list(s.scalars(select(db.Root.path)))
        if candidate.is_absolute() or os.sep in value or value.startswith("."):
            folder = os.path.abspath(candidate)
            inside = any(
                folder == root or folder.startswith(root.rstrip(os.sep) + os.sep) for root in roots
            )
            if inside or any(root.startswith(folder.rstrip(os.sep) + os.sep) for root in roots):
                return under_folder(folder)
            raise ClipdeskError(f"{value} is not a folder of the library (see `clipdesk status`)")
        name = value.strip(os.sep)
        part = f"%{os.sep}{_escape_like(name)}{os.sep}%"
        condition = func.lower(db.Photo.path).like(part.lower(), escape="\\")
        if s.scalar(select(db.Photo.id).where(condition).limit(1)) is None:
            raise ClipdeskError(
                f"no folder named {value!r} in the library (give its path, or a folder name "
                "as it appears in the photos' paths)"
            )
        return condition


def filter_conditions(library: Library, filters: Filters) -> list[ColumnElement[bool]]:
    """The SQL conditions on ``db.Photo`` for every filter but the tags."""
    conditions: list[ColumnElement[bool]] = []
    if filters.folders:
        conditions.append(or_(*(_folder_condition(library, f) for f in filters.folders)))
    start, end = filters.time_range()
    if start is not None:
        conditions.append(db.Photo.taken_at >= start)
    if end is not None:
        conditions.append(db.Photo.taken_at < end)
    suffixes = filters.suffixes()
    if filters.types:
        if not suffixes:
            conditions.append(false())
        else:
            lowered = func.lower(db.Photo.path)
            conditions.append(
                or_(*(lowered.like(f"%{_escape_like(s)}", escape="\\") for s in suffixes))
            )
    width, height = db.Photo.width, db.Photo.height
    if filters.orientation == "landscape":
        conditions.append(width > height)
    elif filters.orientation == "portrait":
        conditions.append(width < height)
    elif filters.orientation == "square":
        conditions.append(width == height)
    if filters.min_pixels is not None:
        conditions.append(width * height >= filters.min_pixels)
    if filters.cameras:
        conditions.append(_camera_condition(library, filters.cameras))
    return conditions


class CamerasNotReadError(ClipdeskError):
    """Photos scanned before clipdesk recorded camera models have none yet: a camera:
    filter would leave them out without saying so."""


def _camera_condition(library: Library, cameras: tuple[str, ...]) -> ColumnElement[bool]:
    """``camera:VALUE``: the camera model (EXIF make and model, as "Canon EOS 5D")
    contains VALUE, in any case; several values: any of them. Refused while some readable
    photos' models are not read yet (the next scan reads them), rather than answering
    without those photos."""
    with library.session() as s:
        unread = s.scalar(
            select(func.count())
            .select_from(db.Photo)
            .where(db.Photo.camera.is_(None), db.Photo.error.is_(None))
        )
    if unread:
        raise CamerasNotReadError(
            f"camera: cannot filter yet: the camera models of {unread:,} photos were not "
            "recorded when they were scanned; they are read on the next scan "
            "(`clipdesk index`, or the window's next indexing run)"
        )
    lowered = func.lower(db.Photo.camera)
    return or_(
        *(
            lowered.like(f"%{_escape_like(camera.strip().lower())}%", escape="\\")
            for camera in cameras
        )
    )


class NoPhotoPassesError(ClipdeskError):
    """The filters let no photo through (a search says so; a smart album shows none)."""


def matching_photo_ids(library: Library, filters: Filters) -> set[int] | None:
    """The ids of the readable photos that pass every filter but the tags; None when no
    such filter is set (every photo may be returned)."""
    conditions = filter_conditions(library, filters)
    if not conditions:
        return None
    with library.session() as s:
        query = select(db.Photo.id).where(db.Photo.error.is_(None), *conditions)
        return set(s.scalars(query))
