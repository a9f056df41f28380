"""The search field's filters as chips, and the query without one of them. No Qt here: the
filter bar (search_bar.py) draws the chips, tests drive this without Qt."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from datetime import date

from clipdesk.search.query import Filters, ParsedQuery, format_query


@dataclass(frozen=True)
class Chip:
    """One active filter: ``key`` as in the query (``in``, ``after``…), ``value`` as stored
    in :class:`Filters` (a str, a date or a number), ``label`` what the chip says."""

    key: str
    value: object
    label: str


def _pixels(pixels: int) -> str:
    if pixels >= 1_000_000:
        return f"{pixels / 1_000_000:g} MP"
    return f"{pixels:,} px"


def _day(day: date) -> str:
    """As short as the query writes it: 2023, 2023-07, 2023-07-14."""
    if day.day == 1:
        return f"{day.year:04d}" if day.month == 1 else f"{day.year:04d}-{day.month:02d}"
    return day.isoformat()


def filter_chips(filters: Filters) -> list[Chip]:
    """The chips of ``filters``, in the order format_query writes them."""
    chips = [
        Chip("in", folder, f"in {os.path.basename(folder) or folder}") for folder in filters.folders
    ]
    chips += [Chip("tag", tag, f"tag {tag}") for tag in filters.tags]
    chips += [Chip("type", kind, kind.upper()) for kind in filters.types]
    chips += [Chip("camera", camera, f"camera {camera}") for camera in filters.cameras]
    if filters.orientation:
        chips.append(Chip("orientation", filters.orientation, filters.orientation))
    if filters.min_pixels:
        chips.append(Chip("minpx", filters.min_pixels, f"≥ {_pixels(filters.min_pixels)}"))
    if filters.after:
        chips.append(Chip("after", filters.after, f"from {_day(filters.after)}"))
    if filters.before:
        chips.append(Chip("before", filters.before, f"before {_day(filters.before)}"))
    return chips


def without_chip(parsed: ParsedQuery, chip: Chip) -> ParsedQuery:
    """``parsed`` with the filter of ``chip`` taken out."""
    f = parsed.filters
    key, value = chip.key, chip.value
    if key == "in":
        f = dataclasses.replace(f, folders=tuple(v for v in f.folders if v != value))
    elif key == "tag":
        f = dataclasses.replace(f, tags=tuple(v for v in f.tags if v != value))
    elif key == "type":
        f = dataclasses.replace(f, types=tuple(v for v in f.types if v != value))
    elif key == "camera":
        f = dataclasses.replace(f, cameras=tuple(v for v in f.cameras if v != value))
    elif key == "after":
        f = dataclasses.replace(f, after=None)
    elif key == "before":
        f = dataclasses.replace(f, before=None)
    elif key == "orientation":
        f = dataclasses.replace(f, orientation=None)
    elif key == "minpx":
        f = dataclasses.replace(f, min_pixels=None)
    else:
        raise ValueError(f"no filter {key!r}")
    return ParsedQuery(parsed.terms, f)


def text_without_chip(parsed: ParsedQuery, chip: Chip) -> str:
    """The search text without ``chip``'s filter; ValueError when no text can say it (the
    field then keeps the text as typed)."""
    return format_query(without_chip(parsed, chip))
