"""What a search asks for: the syntax of the search field and of the CLI's TEXT, and the
arithmetic that turns several terms into one query vector.

Over 600 lines on purpose: most of it is the syntax's documentation (this docstring), and
the reader (``parse_query``) and the writer (``format_query``, for the window's filter
chips) must agree token for token, which is easiest to keep true in one place.

The search syntax (user documentation)
======================================

An ordinary query is searched as it is: ``t-shirt``, ``x-ray``, ``2 dogs``, ``a - b``,
``+1 phone``, ``C++ book``, ``"new york" at night``, ``10:30 sunset``, ``note: dog``,
``http://example.com``. Only the forms below mean something more, and each needs a shape
that ordinary text does not have. The query is read word by word: a word ends at a space,
but a part in double quotes (``"..."`` or ``“...”``) stays in one word. A quote opens such
a part only at the start of a word or after ``:`` or ``-``, and only when its closing
quote follows somewhere; otherwise it is an ordinary character (``12" vinyl``).

Terms (what to look for)
------------------------
``beach at night``
    words form one text term.
``beach -people``
    a word that starts with ``-`` followed by a letter, a quote, a path or ``photo:`` is
    subtracted: photos of a beach, without people. Only that one word: ``beach -people
    at night`` is "beach at night" without "people"; subtract several words in quotes:
    ``beach -"people walking"``.
    A ``-`` inside a word (``t-shirt``) or followed by a space or a digit (``a - b``,
    ``-5 degrees``) is ordinary text.
``sunset + ./boat.jpg``
    a ``+`` standing alone as a word adds the terms around it ("sunset" and a boat
    photo); an empty term is left out (``sunset +``, while typing, is ``sunset``).
    ``+1``, ``C++`` or ``1+1`` are ordinary text.
``2:sunset + boat``, ``sunset -0.5:people``
    a number and a colon before a term weigh it (default 1; ``-0.5:people`` subtracts at
    half weight). The term must start with a letter, a quote, a path or ``photo:`` after
    the colon, so ``10:30`` or ``16:9`` stay text. A weight starts a new term:
    ``sunset 2:calm sea`` is ``sunset + 2:calm sea``. A weight of 0 is an error.
``./boat.jpg``, ``../x.png``, ``/home/me/x.jpg``, ``~/x.heic``, ``C:\\x.jpg``
    a path to an image file (it starts with ``./``, ``../``, ``/``, ``~/`` or a drive,
    and ends with an image extension clipdesk reads) searches by that image. A path with
    spaces goes in quotes: ``"~/My Photos/boat.jpg"``.
``photo:123``
    a photo of the library by its number (as in ``--json``'s ``id``).
``"-people"``, ``"in:Holidays"``
    a term that is one quoted piece is searched literally, without its quotes; so
    quoting the whole query always searches its text as written. Quotes inside a longer
    text stay part of it: ``"new york" at night``.

Several images, photos and words can be mixed: ``2:sunset + ./boat.jpg -people``. The
vectors of the terms are combined as a weighted sum (see ``combine``). A query needs at
least one term that is not subtracted.

Filters (which photos take part)
--------------------------------
A filter is ``key:value`` with no space after the colon, a key from the list below (any
case) and a value of the right shape; anything else (``note:``, ``http://x``) is text.
A value with spaces goes in quotes: ``in:"Summer 2023"``. Filters can stand anywhere in
the query; every filter must hold (AND); repeating a key widens or narrows as listed.

=============================  ===========================================================
``in:FOLDER``                  under this folder, recursively (a path, or a name the
                               service resolves); several ``in:`` = any of them
``after:DATE``                 taken on or after the start of DATE (inclusive)
``before:DATE``                taken before the start of DATE (exclusive); ``after:2023-07
                               before:2023-08`` is July 2023. DATE is ``YYYY``,
                               ``YYYY-MM`` or ``YYYY-MM-DD``; several = the narrowest
``tag:LABEL``                  carries this tag; several ``tag:`` = all of them
``type:EXT``                   file type (``jpg`` also means .jpeg/.jpe/.jfif, ``tif``
                               .tiff, ``heic`` .heif/.hif, ``bmp`` .dib); several = any
``orientation:O``              ``landscape`` (wider than high), ``portrait`` or ``square``
``camera:MODEL``               camera model (the service matches it, e.g. as a part of
                               the model name, ignoring case); several = any
``minpx:N``                    at least N pixels (width x height): ``minpx:8000000``,
                               ``minpx:8M``, ``minpx:500k``, or ``minpx:1920x1080`` (the
                               product); several = the largest
=============================  ===========================================================

``after:``, ``before:`` and ``minpx:`` values that start with a digit, an ``orientation:``
or ``type:`` value made of letters, must be valid, or the search stops with a message
saying what to write (``after:2023-02-30``, ``orientation:diagonal``, ``type:pdf``);
other shapes are text (``before:after``, ``minpx:large``). A filter cannot be subtracted
(``-tag:x`` is an error) and a weight cannot stand before a filter. A query of filters
only lists the photos that pass them.
"""

from __future__ import annotations

import calendar
import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from clipdesk.errors import ClipdeskError
from clipdesk.imaging import IMAGE_EXTENSIONS

TermKind = Literal["text", "image", "photo"]
Orientation = Literal["landscape", "portrait", "square"]
ORIENTATIONS: tuple[Orientation, ...] = ("landscape", "portrait", "square")

FILTER_KEYS = ("in", "after", "before", "tag", "type", "orientation", "camera", "minpx")

# Below this (relative to the sum of the weights' sizes) a combined vector is rounding
# noise, not a direction: "beach -beach".
CANCEL_TOLERANCE = 1e-3

_QUOTES = {'"': '"', "\u201c": "\u201d"}  # opening -> closing
_WEIGHT = re.compile(r"(\d+(?:\.\d+)?|\.\d+):(.+)", re.DOTALL)
_FILTER = re.compile(r"([A-Za-z]+):(.+)", re.DOTALL)
_PHOTO = re.compile(r"photo:(\d+)", re.IGNORECASE)
_DATE = re.compile(r"(\d{4})(?:-(\d{1,2})(?:-(\d{1,2}))?)?")
_DATE_LIKE = re.compile(r"\d")
_PIXELS = re.compile(r"(\d+(?:\.\d+)?)(k|m|mp)?", re.IGNORECASE)
_PIXELS_WXH = re.compile(r"(\d+)[x×](\d+)", re.IGNORECASE)
_TYPE_LIKE = re.compile(r"\.?[A-Za-z0-9]+")
_PATH_START = re.compile(r"(\.{1,2}[/\\]|[/\\]|~[/\\]|[A-Za-z]:[/\\])")

# One name per file type; the other extensions of that type are aliases.
_TYPE_GROUPS = {
    "jpg": ("jpg", "jpeg", "jpe", "jfif"),
    "tif": ("tif", "tiff"),
    "heic": ("heic", "heif", "hif"),
    "bmp": ("bmp", "dib"),
}
_TYPE_NAME = {ext.lstrip("."): ext.lstrip(".") for ext in IMAGE_EXTENSIONS}
for _name, _aliases in _TYPE_GROUPS.items():
    for _alias in _aliases:
        _TYPE_NAME[_alias] = _name


class QueryError(ClipdeskError):
    """A search text or filter the user can correct; ``token`` is the part at fault (the
    window can highlight it), empty where the whole query is."""

    def __init__(self, message: str, token: str = "") -> None:
        super().__init__(message)
        self.token = token


@dataclass(frozen=True)
class Term:
    """One thing to look for. ``value``: the text; an image path as typed (see ``path``);
    a library photo's id as digits (see ``photo_id``). A negative ``weight`` subtracts."""

    kind: TermKind
    value: str
    weight: float = 1.0

    @property
    def negative(self) -> bool:
        return self.weight < 0

    @property
    def photo_id(self) -> int:
        if self.kind != "photo":
            raise ValueError(f"a {self.kind} term has no photo id")
        return int(self.value)

    def path(self, base: Path | None = None) -> Path:
        """An image term's file: ``~`` expanded, a relative path taken from ``base``
        (default: the current folder)."""
        if self.kind != "image":
            raise ValueError(f"a {self.kind} term has no path")
        path = Path(self.value).expanduser()
        return path if path.is_absolute() or base is None else base / path


@dataclass(frozen=True)
class Filters:
    """Which photos take part; every field that is set must hold. ``after`` is inclusive,
    ``before`` exclusive (``time_range`` gives the timestamps). ``folders``, ``types`` and
    ``cameras``: any of them; ``tags``: all of them. ``types`` are type names as in
    ``type:`` (``suffixes`` gives the file extensions)."""

    folders: tuple[str, ...] = ()
    after: date | None = None
    before: date | None = None
    tags: tuple[str, ...] = ()
    types: tuple[str, ...] = ()
    orientation: Orientation | None = None
    cameras: tuple[str, ...] = ()
    min_pixels: int | None = None

    def is_empty(self) -> bool:
        return self == Filters()

    def suffixes(self) -> frozenset[str]:
        """The file extensions (``.jpeg``, lower case) the ``types`` stand for."""
        return frozenset(
            f".{ext}" for ext, name in _TYPE_NAME.items() for wanted in self.types if name == wanted
        )

    def time_range(self) -> tuple[float | None, float | None]:
        """``[start, end)`` in seconds since the epoch at local midnight, as ``taken_at``
        is stored (EXIF times are local); None where open."""
        return (
            None if self.after is None else _local_midnight(self.after),
            None if self.before is None else _local_midnight(self.before),
        )

    def merged(self, other: Filters) -> Filters:
        """Both sets of filters at once, as if typed in one query (the CLI's options and
        the text's filters): lists add up, dates and ``min_pixels`` take the narrowest."""
        built = _FilterBuilder()
        for filters in (self, other):
            built.add_filters(filters)
        return built.build()


@dataclass(frozen=True)
class ParsedQuery:
    """A search: the terms, in the order typed, and the filters."""

    terms: tuple[Term, ...] = ()
    filters: Filters = field(default_factory=Filters)

    @property
    def weights(self) -> list[float]:
        return [term.weight for term in self.terms]

    @property
    def text_for_display(self) -> str:
        """The terms written as a query, without the filters (a heading, an album's
        default name); empty for a query of filters only."""
        try:
            return format_query(ParsedQuery(self.terms))
        except ValueError:  # terms built by hand that no query text can express
            return " + ".join(term.value for term in self.terms)


# -- reading ---------------------------------------------------------------------------


@dataclass
class _Token:
    text: str
    start: int
    end: int


def _tokens(query: str) -> list[_Token]:
    """Words split at whitespace; a quoted part stays whole. A quote opens one only at the
    start of a word or after ``:`` or ``-`` (so the inch mark of ``12" vinyl`` is a
    character), and only with its closing quote somewhere after it."""
    out: list[_Token] = []
    i, n = 0, len(query)
    while i < n:
        if query[i].isspace():
            i += 1
            continue
        start = i
        while i < n and not query[i].isspace():
            close = _QUOTES.get(query[i])
            opens = close is not None and (i == start or query[i - 1] in ":-")
            end = query.find(close, i + 1) if opens and close is not None else -1
            i = end + 1 if end >= 0 else i + 1
        out.append(_Token(query[start:i], start, i))
    return out


def _unquoted(text: str) -> str | None:
    """The inside of ``text`` when it is exactly one quoted piece, else None."""
    close = _QUOTES.get(text[:1])
    if close is None or len(text) < 2 or text[-1] != close:
        return None
    inside = text[1:-1]
    return None if any(q in inside for q in (*_QUOTES, *_QUOTES.values())) else inside


def _has_quote(text: str) -> bool:
    return any(q in text for q in (*_QUOTES, *_QUOTES.values()))


def _is_image_path(text: str) -> bool:
    if not text or _has_quote(text) or not _PATH_START.match(text):
        return False
    suffix = Path(text.replace("\\", "/")).suffix.lower()
    return suffix in IMAGE_EXTENSIONS


def _image_value(text: str) -> str | None:
    """The path ``text`` names (quoted or not), or None when it is no image path."""
    inside = _unquoted(text)
    candidate = text if inside is None else inside
    return candidate if _is_image_path(candidate) else None


def _hint(token: str) -> str:
    return f' (to search for the text "{token}", put it in quotes)'


def parse_date(value: str, label: str) -> date:
    """``YYYY``, ``YYYY-MM`` or ``YYYY-MM-DD`` as the first day it covers. ``label``
    names what the user typed (``after:2023-13``, ``--after 2023-13``) for the message."""
    match = _DATE.fullmatch(value.strip())
    form = "write the date as YYYY, YYYY-MM or YYYY-MM-DD"
    if match is None:
        raise QueryError(f"cannot read the date in {label}: {form}", label)
    year, month, day = int(match[1]), int(match[2] or 1), int(match[3] or 1)
    if year < 1:
        raise QueryError(f"cannot read the date in {label}: there is no year 0", label)
    if not 1 <= month <= 12:
        raise QueryError(f"cannot read the date in {label}: there is no month {month}", label)
    days = calendar.monthrange(year, month)[1]
    if not 1 <= day <= days:
        month_name = calendar.month_name[month]
        raise QueryError(
            f"cannot read the date in {label}: {month_name} {year} has {days} days", label
        )
    return date(year, month, day)


def parse_orientation(value: str, label: str) -> Orientation:
    wanted = value.strip().lower()
    for orientation in ORIENTATIONS:
        if wanted == orientation:
            return orientation
    raise QueryError(f"unknown orientation in {label}: use landscape, portrait or square", label)


def parse_type(value: str, label: str) -> str:
    """A file type's name (``jpeg`` -> ``jpg``, ``.HEIF`` -> ``heic``)."""
    name = _TYPE_NAME.get(value.strip().lower().lstrip("."))
    if name is None:
        known = ", ".join(sorted(set(_TYPE_NAME.values())))
        raise QueryError(
            f"clipdesk does not index the file type in {label} (it reads {known})", label
        )
    return name


def parse_min_pixels(value: str, label: str) -> int:
    """``8000000``, ``8M``/``8MP``, ``500k`` or ``1920x1080`` as a number of pixels."""
    text = value.strip()
    wxh = _PIXELS_WXH.fullmatch(text)
    if wxh is not None:
        pixels = int(wxh[1]) * int(wxh[2])
    else:
        match = _PIXELS.fullmatch(text)
        if match is None:
            raise QueryError(
                f"cannot read the size in {label}: write pixels as 8000000, 8M, 500k or 1920x1080",
                label,
            )
        scale = {"k": 1_000, "m": 1_000_000, "mp": 1_000_000}.get((match[2] or "").lower(), 1)
        pixels = round(float(match[1]) * scale)
    if pixels <= 0:
        raise QueryError(f"the size in {label} must be at least 1 pixel", label)
    return pixels


def _add_unique(items: tuple[str, ...], value: str) -> tuple[str, ...]:
    return items if value in items else (*items, value)


class _FilterBuilder:
    """Filters gathered one by one, with the rules for a key given twice."""

    def __init__(self) -> None:
        self.filters = Filters()

    def _set(self, **changes: Any) -> None:
        self.filters = dataclasses.replace(self.filters, **changes)

    def add_filters(self, other: Filters) -> None:
        for folder in other.folders:
            self._set(folders=_add_unique(self.filters.folders, folder))
        for tag in other.tags:
            self._set(tags=_add_unique(self.filters.tags, tag))
        for kind in other.types:
            self._set(types=_add_unique(self.filters.types, kind))
        for camera in other.cameras:
            self._set(cameras=_add_unique(self.filters.cameras, camera))
        if other.after is not None:
            self.after(other.after, f"after:{_format_date(other.after)}")
        if other.before is not None:
            self.before(other.before, f"before:{_format_date(other.before)}")
        if other.orientation is not None:
            self.orientation(other.orientation, f"orientation:{other.orientation}")
        if other.min_pixels is not None:
            self.min_pixels(other.min_pixels)

    def after(self, when: date, label: str) -> None:
        if self.filters.after is None or when > self.filters.after:
            self._set(after=when)
        self._check_range(label)

    def before(self, when: date, label: str) -> None:
        if self.filters.before is None or when < self.filters.before:
            self._set(before=when)
        self._check_range(label)

    def _check_range(self, label: str) -> None:
        after, before = self.filters.after, self.filters.before
        if after is not None and before is not None and after >= before:
            raise QueryError(
                f"no date is both after:{_format_date(after)} (on or after) and "
                f"before:{_format_date(before)} (before, not on)",
                label,
            )

    def orientation(self, orientation: Orientation, label: str) -> None:
        if self.filters.orientation not in (None, orientation):
            raise QueryError(
                f"a photo cannot be both {self.filters.orientation} and {orientation}", label
            )
        self._set(orientation=orientation)

    def min_pixels(self, pixels: int) -> None:
        if self.filters.min_pixels is None or pixels > self.filters.min_pixels:
            self._set(min_pixels=pixels)

    def add(self, key: str, value: str, label: str) -> None:
        """One filter typed as ``key:value`` (the value checked)."""
        if key == "in":
            self._set(folders=_add_unique(self.filters.folders, value))
        elif key == "tag":
            self._set(tags=_add_unique(self.filters.tags, value))
        elif key == "camera":
            self._set(cameras=_add_unique(self.filters.cameras, value))
        elif key == "type":
            self._set(types=_add_unique(self.filters.types, parse_type(value, label)))
        elif key == "after":
            self.after(parse_date(value, label), label)
        elif key == "before":
            self.before(parse_date(value, label), label)
        elif key == "orientation":
            self.orientation(parse_orientation(value, label), label)
        elif key == "minpx":
            self.min_pixels(parse_min_pixels(value, label))
        else:  # pragma: no cover - FILTER_KEYS and this list are the same
            raise AssertionError(key)

    def build(self) -> Filters:
        return self.filters


def _filter_of(text: str) -> tuple[str, str] | None:
    """``(key, value)`` when ``text`` reads as a filter, else None (it is text)."""
    match = _FILTER.fullmatch(text)
    if match is None or match[1].lower() not in FILTER_KEYS:
        return None
    key, raw = match[1].lower(), match[2]
    inside = _unquoted(raw)
    if inside is None and _has_quote(raw):
        return None
    value = raw if inside is None else inside
    if not value.strip():
        return None
    if key in ("after", "before", "minpx") and not _DATE_LIKE.match(value):
        return None  # before:after is text
    if key == "orientation" and not value.isalpha():
        return None
    if key == "type" and not _TYPE_LIKE.fullmatch(value):
        return None
    return key, value


@dataclass
class _Piece:
    """One word of the query, read: a separator, a filter, a word of a text term (with
    the weight it starts), or a whole term (an image, a photo, a subtracted word)."""

    kind: Literal["plus", "filter", "word", "term"]
    index: int
    token: _Token
    key: str = ""
    value: str = ""
    weight: float | None = None
    text_start: int = 0
    term: Term | None = None


def _weighted(text: str) -> tuple[float, str] | None:
    """``(weight, rest)`` when ``text`` starts with a weight, else None."""
    match = _WEIGHT.fullmatch(text)
    if match is None:
        return None
    rest = match[2]
    if not (
        rest[0].isalpha()
        or _unquoted(rest) is not None
        or _image_value(rest) is not None
        or _PHOTO.fullmatch(rest)
    ):
        return None
    return float(match[1]), rest


def _read_token(token: _Token, index: int) -> _Piece:
    text = token.text
    if text == "+":
        return _Piece("plus", index, token)
    if _image_value(text) is not None:
        return _Piece("term", index, token, term=Term("image", _image_value(text) or ""))
    photo = _PHOTO.fullmatch(text)
    if photo is not None:
        return _Piece("term", index, token, term=Term("photo", str(int(photo[1]))))
    found = _filter_of(text)
    if found is not None:
        return _Piece("filter", index, token, key=found[0], value=found[1])

    negative = text.startswith("-") and len(text) > 1
    rest = text[1:] if negative else text
    weighted = _weighted(rest)
    if weighted is None:
        if not negative or not (
            rest[0].isalpha()
            or _unquoted(rest) is not None
            or _image_value(rest) is not None
            or _PHOTO.fullmatch(rest)
        ):
            return _Piece("word", index, token, text_start=token.start)  # a - b, -5, 10:30
        weight = 1.0
    else:
        weight, rest = weighted
        if weight == 0:
            raise QueryError(f"the weight in {text} is 0: leave the term out instead", text)
    prefix = len(text) - len(rest)

    if _filter_of(rest) is not None:
        what = "subtract" if negative else "weigh"
        raise QueryError(f"cannot {what} a filter: {text}" + _hint(text), text)
    weight = -weight if negative else weight
    image = _image_value(rest)
    if image is not None:
        return _Piece("term", index, token, term=Term("image", image, weight))
    photo = _PHOTO.fullmatch(rest)
    if photo is not None:
        return _Piece("term", index, token, term=Term("photo", str(int(photo[1])), weight))
    if negative:
        return _Piece("term", index, token, term=Term("text", _unquoted(rest) or rest, weight))
    return _Piece("word", index, token, weight=weight, text_start=token.start + prefix)


def _text_term(query: str, words: list[_Piece]) -> Term:
    """The words of one text term, as typed: runs of adjacent words kept with their own
    spacing, runs joined by one space."""
    runs: list[str] = []
    run_start = words[0].text_start
    for i, word in enumerate(words):
        last = i + 1 == len(words) or words[i + 1].index != word.index + 1
        if last:
            runs.append(query[run_start : word.token.end])
            if i + 1 < len(words):
                run_start = words[i + 1].text_start
    value = " ".join(runs)
    weight = words[0].weight if words[0].weight is not None else 1.0
    return Term("text", _unquoted(value) or value, weight)


def parse_query(query: str) -> ParsedQuery:
    """Read a search text (the syntax is in this module's docstring). Raises
    ``QueryError`` with a message for the user where the text cannot be meant."""
    parsed = _parse(query)
    if parsed.terms and all(term.negative for term in parsed.terms):
        raise QueryError(
            "only subtracted terms: add what to look for (beach -people)" + _hint(query.strip()),
            query.strip(),
        )
    return parsed


def _parse(query: str) -> ParsedQuery:
    pieces = [_read_token(token, i) for i, token in enumerate(_tokens(query))]

    filters = _FilterBuilder()
    placed: list[tuple[int, Term]] = []
    words: list[_Piece] = []

    def close_text() -> None:
        if words:
            placed.append((words[0].index, _text_term(query, words)))
            words.clear()

    for piece in pieces:
        if piece.kind == "filter":
            filters.add(piece.key, piece.value, piece.token.text)
        elif piece.kind == "plus":
            close_text()
        elif piece.kind == "term":
            assert piece.term is not None
            placed.append((piece.index, piece.term))
        else:
            if piece.weight is not None:  # a weight starts a new term
                close_text()
            words.append(piece)
    close_text()

    terms = tuple(term for _, term in sorted(placed, key=lambda pair: pair[0]))
    return ParsedQuery(terms, filters.build())


def filters_from_options(
    *,
    folders: Sequence[str] = (),
    after: str | None = None,
    before: str | None = None,
    tags: Sequence[str] = (),
    types: Sequence[str] = (),
    orientation: str | None = None,
    cameras: Sequence[str] = (),
    min_pixels: str | None = None,
) -> Filters:
    """The CLI's filter options, checked as the same filters typed in a query; messages
    name the option (``--after 2023-13``)."""
    built = _FilterBuilder()
    for folder in folders:
        built.add("in", folder, f"--folder {folder}")
    for tag in tags:
        built.add("tag", tag, f"--tag {tag}")
    for kind in types:
        built.add("type", kind, f"--type {kind}")
    for camera in cameras:
        built.add("camera", camera, f"--camera {camera}")
    if after is not None:
        built.add("after", after, f"--after {after}")
    if before is not None:
        built.add("before", before, f"--before {before}")
    if orientation is not None:
        built.add("orientation", orientation, f"--orientation {orientation}")
    if min_pixels is not None:
        built.add("minpx", min_pixels, f"--minpx {min_pixels}")
    return built.build()


def orientation_of(width: int, height: int) -> Orientation:
    """What ``orientation:`` calls a photo of this size (exactly equal sides: square)."""
    if width > height:
        return "landscape"
    return "portrait" if height > width else "square"


def _local_midnight(day: date) -> float:
    moment = datetime(day.year, day.month, day.day)
    try:
        return moment.timestamp()
    except (OverflowError, OSError, ValueError):  # Windows before 1970, year 1
        offset = datetime.now().astimezone().utcoffset()
        seconds = 0.0 if offset is None else offset.total_seconds()
        return (moment - datetime(1970, 1, 1)).total_seconds() - seconds


# -- writing ---------------------------------------------------------------------------


def _format_date(day: date) -> str:
    if day.day != 1:
        return f"{day.year:04d}-{day.month:02d}-{day.day:02d}"
    if day.month != 1:
        return f"{day.year:04d}-{day.month:02d}"
    return f"{day.year:04d}"


def _format_pixels(pixels: int) -> str:
    if pixels % 1_000_000 == 0:
        return f"{pixels // 1_000_000}M"
    if pixels % 1_000 == 0:
        return f"{pixels // 1_000}k"
    return str(pixels)


def _format_weight(weight: float) -> str:
    sign = "-" if weight < 0 else ""
    size = abs(weight)
    if size == 1:
        return sign
    return f"{sign}{np.format_float_positional(size, trim='-')}:"


def _format_term(term: Term) -> str:
    prefix = _format_weight(term.weight)
    if term.kind == "photo":
        return f"{prefix}photo:{term.photo_id}"
    if term.kind == "image":
        spaced = any(c.isspace() for c in term.value)
        for written in (f'"{term.value}"',) if spaced else (term.value, f'"{term.value}"'):
            if _image_value(written) == term.value:
                return prefix + written
        raise ValueError(f"cannot write the image path {term.value!r} in a query")
    for written in (term.value, f'"{term.value}"'):
        if _parse(prefix + written) == ParsedQuery((term,)):
            return prefix + written
    raise ValueError(f"cannot write the text {term.value!r} in a query")


def _format_value(key: str, value: str) -> str:
    if _has_quote(value) or not value.strip():
        raise ValueError(f"cannot write {key}:{value!r} in a query")
    written = f'{key}:"{value}"' if any(c.isspace() for c in value) else f"{key}:{value}"
    if _filter_of(written) != (key, value):
        written = f'{key}:"{value}"'
    return written


def format_query(parsed: ParsedQuery) -> str:
    """The text that reads back as ``parsed`` (``parse_query(format_query(p)) == p`` for
    any ``p`` from ``parse_query``): terms in order, then the filters. Raises ValueError
    for a query no text can express (a path or text with quotes inside, say)."""
    f = parsed.filters
    written_filters = [
        *(_format_value("in", folder) for folder in f.folders),
        *(_format_value("tag", tag) for tag in f.tags),
        *(f"type:{kind}" for kind in f.types),
        *(_format_value("camera", camera) for camera in f.cameras),
        *([f"orientation:{f.orientation}"] if f.orientation else []),
        *([f"minpx:{_format_pixels(f.min_pixels)}"] if f.min_pixels else []),
        *([f"after:{_format_date(f.after)}"] if f.after else []),
        *([f"before:{_format_date(f.before)}"] if f.before else []),
    ]
    filters = " ".join(written_filters)
    terms = ""
    for term in parsed.terms:
        joint = "" if not terms else " " if term.negative else " + "
        terms += joint + _format_term(term)
    # Filters last, unless an unpaired quote in a text term would pair with one of theirs.
    for text in (f"{terms} {filters}".strip(), f"{filters} {terms}".strip()):
        if _parse(text) == parsed:
            return text
    raise ValueError(f"cannot write this query as text: {parsed!r}")


# -- arithmetic ------------------------------------------------------------------------


def combine(
    vectors: npt.ArrayLike, weights: Sequence[float] | npt.ArrayLike | None = None
) -> npt.NDArray[np.float32]:
    """One unit query vector from the terms' vectors (one row each): each row scaled to
    length 1, times its weight (negative subtracts), summed, and the sum scaled to length
    1 (rclip's habit, with the sum normalised so scores stay cosines). No weights: equal
    weights, the "more like these" of several photos. Raises ``QueryError`` when the terms
    cancel out (``beach -beach``), ValueError for vectors or weights that are no input."""
    matrix = np.asarray(vectors, dtype=np.float64)
    if matrix.ndim == 1:
        matrix = matrix[np.newaxis, :]
    if matrix.ndim != 2 or matrix.shape[0] == 0 or matrix.shape[1] == 0:
        raise ValueError(f"expected one vector per term, got shape {matrix.shape}")
    if weights is None:
        scale = np.ones(matrix.shape[0])
    else:
        scale = np.asarray(weights, dtype=np.float64).reshape(-1)
        if scale.shape[0] != matrix.shape[0]:
            raise ValueError(f"{matrix.shape[0]} vectors but {scale.shape[0]} weights")
        if not np.all(np.isfinite(scale)) or np.any(scale == 0):
            raise ValueError("weights must be finite and not 0")
    lengths = np.linalg.norm(matrix, axis=1)
    if not np.all(np.isfinite(lengths)) or np.any(lengths == 0):
        raise ValueError("a term's vector is zero or not finite")
    total = (scale / lengths) @ matrix
    length = float(np.linalg.norm(total))
    if length <= CANCEL_TOLERANCE * float(np.abs(scale).sum()):
        raise QueryError(
            "the search terms cancel each other out (like beach -beach): nothing is left "
            "to look for"
        )
    result: npt.NDArray[np.float32] = (total / length).astype(np.float32)
    return result
