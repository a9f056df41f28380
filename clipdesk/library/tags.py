"""What tags a photo has: the model's automatic tags and the user's word on them, as one rule.

Two tables hold tags. ``photo_tags`` has the automatic ones, per model and label set, with
their softmax probability. ``tag_marks`` has what the user said, per content fingerprint
and tag name (:class:`clipdesk.library.db.TagMark`): ``confirmed``, ``rejected``, ``manual``
or ``imported``. A photo's tags are its automatic tags under the serving model, less the
ones the user rejected, plus the confirmed, manual and imported ones. Every view (the
details panel, the sidebar's counts, the ``tag:`` filter, ``clipdesk tag``, the review
queue, exports) reads them through this module, so they all tell the sources apart the
same way.
"""

from __future__ import annotations

import re
import time
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import delete, select, text
from sqlalchemy.orm import Session

from clipdesk.library import Library, db
from clipdesk.library.queries import in_chunks

AUTO = "auto"
CONFIRMED = "confirmed"
REJECTED = "rejected"
MANUAL = "manual"
IMPORTED = "imported"
MARKS = (CONFIRMED, REJECTED, MANUAL, IMPORTED)
# A tag the user gave (or read from their other apps) comes before the model's guesses.
_USER_FIRST = {CONFIRMED: 0, MANUAL: 0, IMPORTED: 1, AUTO: 2}


@dataclass(frozen=True)
class Tag:
    """One tag of one photo. ``score``: the model's probability when it gave (or was asked
    about) the tag, else None (a tag added by hand or imported)."""

    label: str
    score: float | None
    source: str  # auto, confirmed, manual or imported
    sets: tuple[str, ...] = ()  # the label sets that gave it automatically

    @property
    def described(self) -> str:
        """The tag as the details panel and ``clipdesk tag -v`` show it."""
        if self.source == AUTO:
            sets = f", {', '.join(self.sets)}" if self.sets else ""
            return f"{self.label} {self.score or 0:.0%} (automatic{sets})"
        said = {CONFIRMED: "confirmed by you", MANUAL: "added by you", IMPORTED: "imported"}
        return f"{self.label} ({said[self.source]})"

    def as_json(self) -> dict[str, object]:
        score = None if self.score is None else round(self.score, 6)
        return {"label": self.label, "score": score, "source": self.source}


def _ordered(tags: Iterable[Tag]) -> list[Tag]:
    return sorted(tags, key=lambda t: (_USER_FIRST[t.source], -(t.score or 0.0), t.label))


# -- reading ------------------------------------------------------------------------------


def tags_by_photo(
    library: Library,
    model_id: int | None,
    photo_ids: Sequence[int],
    labels: Iterable[str] | None = None,
) -> dict[int, list[Tag]]:
    """Each photo's tags (only those named in ``labels`` when given), best first: the
    user's first, then the model's by probability. Photos without a tag are left out."""
    wanted = None if labels is None else set(labels)
    auto: dict[int, dict[str, tuple[float, list[str]]]] = {}
    fingerprints: dict[int, str] = {}
    marks: dict[str, dict[str, str]] = {}
    with library.session() as s:
        for chunk in in_chunks(list(photo_ids)):
            for pid, fingerprint in s.execute(
                select(db.Photo.id, db.Photo.fingerprint).where(db.Photo.id.in_(chunk))
            ):
                fingerprints[pid] = fingerprint
            if model_id is not None:
                rows = s.execute(
                    select(db.PhotoTag.photo_id, db.Label.name, db.LabelSet.name, db.PhotoTag.score)
                    .join(db.Label, db.Label.id == db.PhotoTag.label_id)
                    .join(db.LabelSet, db.LabelSet.id == db.Label.label_set_id)
                    .where(db.PhotoTag.photo_id.in_(chunk), db.PhotoTag.model_id == model_id)
                )
                for pid, label, set_name, score in rows:
                    if wanted is not None and label not in wanted:
                        continue
                    best, sets = auto.setdefault(pid, {}).get(label, (float("-inf"), []))
                    auto[pid][label] = (max(best, float(score)), [*sets, set_name])
        for prints in in_chunks(sorted(set(fingerprints.values()))):
            for fingerprint, name, source in s.execute(
                select(db.TagMark.fingerprint, db.TagMark.name, db.TagMark.source).where(
                    db.TagMark.fingerprint.in_(prints)
                )
            ):
                if wanted is None or name in wanted:
                    marks.setdefault(fingerprint, {})[name] = source
    result: dict[int, list[Tag]] = {}
    for pid, fingerprint in fingerprints.items():
        given = auto.get(pid, {})
        said = marks.get(fingerprint, {})
        tags = [
            Tag(label, score, said.get(label, AUTO), tuple(sorted(sets)))
            for label, (score, sets) in given.items()
            if said.get(label) != REJECTED
        ]
        tags += [
            Tag(label, None, source)
            for label, source in said.items()
            if source != REJECTED and label not in given
        ]
        if tags:
            result[pid] = _ordered(tags)
    return result


# The photo ids that have a tag (named :label, or any) as the one rule says: automatic under
# :model and not rejected, or marked confirmed / manual / imported.
_TAGGED = """
    SELECT labels.name AS name, photo_tags.photo_id AS photo_id
    FROM photo_tags
    JOIN labels ON labels.id = photo_tags.label_id
    JOIN photos ON photos.id = photo_tags.photo_id
    WHERE photo_tags.model_id = :model {label_clause}
      AND NOT EXISTS (
        SELECT 1 FROM tag_marks
        WHERE tag_marks.fingerprint = photos.fingerprint
          AND tag_marks.name = labels.name AND tag_marks.source = 'rejected')
    UNION
    SELECT tag_marks.name AS name, photos.id AS photo_id
    FROM tag_marks JOIN photos ON photos.fingerprint = tag_marks.fingerprint
    WHERE tag_marks.source != 'rejected' {mark_clause}
"""


def photos_with_tag(library: Library, model_id: int | None, label: str) -> set[int]:
    sql = _TAGGED.format(
        label_clause="AND labels.name = :label", mark_clause="AND tag_marks.name = :label"
    )
    with library.session() as s:
        rows = s.execute(text(sql), {"model": model_id or -1, "label": label})
        return {int(pid) for _name, pid in rows}


def tag_counts(library: Library, model_id: int | None) -> dict[str, int]:
    """Photos per tag name (every source), by name."""
    sql = _TAGGED.format(label_clause="", mark_clause="")
    with library.session() as s:
        rows = s.execute(
            text(f"SELECT name, COUNT(DISTINCT photo_id) FROM ({sql}) GROUP BY name ORDER BY name"),
            {"model": model_id or -1},
        )
        return {str(name): int(count) for name, count in rows}


def known_tag_names(library: Library) -> list[str]:
    """Every tag name a photo can be given: the labels of every set and the names the user
    gave by hand or imported (for completion, and to tell a typo from a tag)."""
    with library.session() as s:
        names = set(s.scalars(select(db.Label.name)))
        names |= set(s.scalars(select(db.TagMark.name).where(db.TagMark.source != REJECTED)))
    return sorted(names, key=str.casefold)


def rejected_photo_ids(library: Library, names: Sequence[str]) -> dict[str, set[int]]:
    """For each name, the photos whose content the user rejected it for."""
    found: dict[str, set[int]] = {name: set() for name in names}
    with library.session() as s:
        for chunk in in_chunks(list(names)):
            rows = s.execute(
                select(db.TagMark.name, db.Photo.id)
                .join(db.Photo, db.Photo.fingerprint == db.TagMark.fingerprint)
                .where(db.TagMark.name.in_(chunk), db.TagMark.source == REJECTED)
            )
            for name, pid in rows:
                found[name].add(int(pid))
    return found


def marked_photo_ids(library: Library, name: str) -> dict[int, str]:
    """The photos the user said something about for ``name``: photo id -> source."""
    with library.session() as s:
        rows = s.execute(
            select(db.Photo.id, db.TagMark.source)
            .join(db.Photo, db.Photo.fingerprint == db.TagMark.fingerprint)
            .where(db.TagMark.name == name)
        )
        return {int(pid): str(source) for pid, source in rows}


# -- writing ------------------------------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def clean_tag_name(name: str) -> str:
    """A tag name as it is kept: Unicode NFC (so "Café" typed two ways is one tag), spaces
    trimmed and single, levels split by "/" without empty ones ("A//B/" is "A/B"). A name
    with control characters or Lightroom's level mark "|" is refused (ValueError), since
    other apps would read it otherwise."""
    text = unicodedata.normalize("NFC", name)
    if _CONTROL.search(text):
        raise ValueError("a tag cannot hold control characters (tabs, line breaks, escapes)")
    if "|" in text:
        raise ValueError(
            "'|' separates levels in Lightroom's keywords: use '/' for levels (Places/Paris)"
        )
    levels = [" ".join(part.split()) for part in text.split("/")]
    cleaned = "/".join(level for level in levels if level)
    if not cleaned:
        raise ValueError("a tag needs a name")
    return cleaned


def _spelling(s: Session, name: str) -> str:
    """``name`` as the library already spells it: a tag that differs only in case from
    a label or a tag it has ("dress" and "Dress") is that tag; an exact match wins."""
    known = set(s.scalars(select(db.Label.name))) | set(s.scalars(select(db.TagMark.name)))
    if name in known:
        return name
    same = sorted(k for k in known if k.casefold() == name.casefold())
    return same[0] if same else name


def matching_tag_name(library: Library, name: str) -> str | None:
    """The library's tag named ``name`` (or differing only in case or Unicode form), or None."""
    try:
        cleaned = clean_tag_name(name)
    except ValueError:
        return None
    names = known_tag_names(library)
    if cleaned in names:
        return cleaned
    same = [k for k in names if k.casefold() == cleaned.casefold()]
    return same[0] if len(same) == 1 else None


@dataclass(frozen=True)
class MarkChange:
    """What one mark call changed: each (fingerprint, name) with its mark before (None:
    none). :func:`undo_marks` puts them back."""

    name: str
    source: str | None
    before: tuple[tuple[str, str | None], ...]
    photos: int

    @property
    def changed(self) -> int:
        return sum(1 for _fp, old in self.before if old != self.source)


def set_marks(
    library: Library,
    photo_ids: Sequence[int],
    name: str,
    source: str | None,
    keep: Sequence[str] = (),
) -> MarkChange:
    """Mark ``name`` on the contents of ``photo_ids`` as ``source`` (None: forget the
    mark). A photo whose mark is one of ``keep`` is left as it is (an import never
    overrides what the user said)."""
    name = clean_tag_name(name)
    if source is not None and source not in MARKS:
        raise ValueError(f"unknown tag source {source!r}")
    now = time.time()
    with library.session() as s:
        name = _spelling(s, name)
        fingerprints: set[str] = set()
        for chunk in in_chunks(list(photo_ids)):
            fingerprints |= set(
                s.scalars(select(db.Photo.fingerprint).where(db.Photo.id.in_(chunk)))
            )
        before: dict[str, str | None] = dict.fromkeys(fingerprints)
        for prints in in_chunks(sorted(fingerprints)):
            rows = s.execute(
                select(db.TagMark.fingerprint, db.TagMark.source).where(
                    db.TagMark.fingerprint.in_(prints), db.TagMark.name == name
                )
            )
            before.update({fp: src for fp, src in rows})
        changing = [fp for fp, old in before.items() if old not in keep]
        for prints in in_chunks(changing):
            s.execute(
                delete(db.TagMark).where(
                    db.TagMark.fingerprint.in_(prints), db.TagMark.name == name
                )
            )
        if source is not None:
            s.add_all(
                db.TagMark(fingerprint=fp, name=name, source=source, created_at=now)
                for fp in changing
            )
        s.commit()
    return MarkChange(
        name, source, tuple((fp, before[fp]) for fp in sorted(changing)), len(photo_ids)
    )


def undo_marks(library: Library, change: MarkChange) -> None:
    """Put back the marks ``change`` replaced."""
    now = time.time()
    with library.session() as s:
        fingerprints = [fp for fp, _old in change.before]
        for chunk in in_chunks(fingerprints):
            s.execute(
                delete(db.TagMark).where(
                    db.TagMark.fingerprint.in_(chunk), db.TagMark.name == change.name
                )
            )
        s.add_all(
            db.TagMark(fingerprint=fp, name=change.name, source=old, created_at=now)
            for fp, old in change.before
            if old is not None
        )
        s.commit()
