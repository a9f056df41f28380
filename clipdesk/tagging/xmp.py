"""Tags in other apps: keywords in XMP sidecars (digiKam, darktable, Lightroom) and in the
photos' own XMP and IPTC, only when the user asks (``clipdesk tags export --xmp`` and
``clipdesk tags import``).

What is written, as digiKam writes it (its MetadataHub): ``dc:subject`` holds each tag's
leaf ("Places/Paris" gives "Paris"), ``digiKam:TagsList`` the whole path ("Places/Paris")
and ``lr:hierarchicalSubject`` Lightroom's form ("Places|Paris"). A tag without levels goes
to all three as it is. Keywords already in a sidecar stay (a union); no other field of the
sidecar is touched.

Which sidecar: ``IMG_1.jpg.xmp`` (the whole file name and ".xmp", as digiKam and darktable
name theirs) unless the photo already has Lightroom's ``IMG_1.xmp`` (the name less its
extension and ".xmp") and no other photo of the folder shares that name: then that one,
so Lightroom sees the keywords. On import both names are read, and the photo's embedded
XMP (the same three fields) and IPTC Keywords.

Safety: the photo itself is never opened for writing; its metadata is read with exiv2,
read-only. A sidecar is changed on a copy in the same folder (pyexiv2 on the copy, fsync,
then ``os.replace``), so a reader sees the old sidecar or the new one and a failure leaves
the old one untouched. A folder where nothing can be written is one error for that folder;
the other folders go on.
"""

from __future__ import annotations

import errno
import os
import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select

from clipdesk.files import fsync_file
from clipdesk.library import Library, db
from clipdesk.library import tags as tag_marks
from clipdesk.library.queries import in_chunks, under_folder
from clipdesk.progress import CancelToken, Progress, RateMeter

SUBJECT = "Xmp.dc.subject"
TAGS_LIST = "Xmp.digiKam.TagsList"
HIERARCHICAL = "Xmp.lr.hierarchicalSubject"
IPTC_KEYWORDS = "Iptc.Application2.Keywords"
FIELDS = (SUBJECT, TAGS_LIST, HIERARCHICAL)
# Tags the other apps keep for themselves: darktable's "darktable|format|cr2" and the
# like, digiKam's internal root; they are no tags of the photo's content.
_APPS_OWN_ROOTS = ("darktable", "_Digikam_root_tag_", "_Digikam_Internal_Tags_")
# A new sidecar: an empty XMP packet that exiv2 then fills.
_EMPTY_PACKET = (
    '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
    '<x:xmpmeta xmlns:x="adobe:ns:meta/">\n'
    ' <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">\n'
    '  <rdf:Description rdf:about=""/>\n'
    " </rdf:RDF>\n"
    "</x:xmpmeta>\n"
    '<?xpacket end="w"?>\n'
)
# A folder where no file can be made: every photo of it fails the same way.
_FOLDER_ERRNOS = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT)


class SidecarError(Exception):
    """One photo's sidecar could not be read or written (the words say why)."""


def _pyexiv2() -> Any:
    import pyexiv2  # lazily: a native library, loaded only when sidecars are read or written

    pyexiv2.set_log_level(3)  # errors only: exiv2's warnings would go to stdout
    return pyexiv2


# -- names --------------------------------------------------------------------------------


def levels(tag: str) -> list[str]:
    """A clipdesk tag's levels ("Places/Paris" -> ["Places", "Paris"]), blanks dropped."""
    return [part.strip() for part in tag.split("/") if part.strip()]


def xmp_values(tags: Iterable[str]) -> dict[str, list[str]]:
    """The three keyword fields for ``tags``, in order, each value once."""
    out: dict[str, list[str]] = {key: [] for key in FIELDS}
    for tag in tags:
        parts = levels(tag)
        if not parts:
            continue
        for key, value in (
            (SUBJECT, parts[-1]),
            (TAGS_LIST, "/".join(parts)),
            (HIERARCHICAL, "|".join(parts)),
        ):
            if value not in out[key]:
                out[key].append(value)
    return out


def tags_from_keywords(
    subject: Iterable[str] = (),
    tags_list: Iterable[str] = (),
    hierarchical: Iterable[str] = (),
    iptc: Iterable[str] = (),
) -> list[str]:
    """clipdesk tags from another app's keywords: the hierarchies rebuilt as "A/B" (from
    digiKam's paths and Lightroom's "A|B"), and the flat keywords (dc:subject, IPTC) that
    are not already a level of one of them (digiKam writes the leaf there, Lightroom each
    level). The apps' own internal tags are left out."""
    paths: list[str] = []
    for raw, sep in [(p, "/") for p in tags_list] + [(p, "|") for p in hierarchical]:
        parts = [part.strip() for part in raw.split(sep) if part.strip()]
        if not parts or parts[0] in _APPS_OWN_ROOTS:
            continue
        path = "/".join(parts)
        if path not in paths:
            paths.append(path)
    covered = {level for path in paths for level in levels(path)}
    found = list(paths)
    for word in [*subject, *iptc]:
        word = word.strip()
        if word and word not in covered and word not in found:
            found.append(word)
    return found


def sidecar_names(photo: str) -> tuple[list[str], list[str]]:
    """The sidecar names a photo may have: digiKam/darktable's ("IMG_1.jpg.xmp") and
    Lightroom's ("IMG_1.xmp"), each in both cases of the extension."""
    stem = os.path.splitext(photo)[0]
    return [photo + ".xmp", photo + ".XMP"], [stem + ".xmp", stem + ".XMP"]


def existing_sidecars(photo: str) -> list[str]:
    """The photo's sidecars that exist, full-name convention first, each file once."""
    full, short = sidecar_names(photo)
    found: list[str] = []
    seen: set[tuple[int, int]] = set()
    for name in full + short:
        try:
            st = os.stat(name)
        except OSError:
            continue
        if os.path.isfile(name) and (st.st_dev, st.st_ino) not in seen:
            seen.add((st.st_dev, st.st_ino))
            found.append(name)
    return found


def sidecar_to_write(photo: str, stems_shared: bool) -> str:
    """Where a photo's keywords go: its existing "IMG_1.jpg.xmp"; else Lightroom's
    "IMG_1.xmp" when it exists and belongs to this photo alone; else a new
    "IMG_1.jpg.xmp"."""
    full, short = sidecar_names(photo)
    for name in full:
        if os.path.isfile(name):
            return name
    if not stems_shared:
        for name in short:
            if os.path.isfile(name):
                return name
    return full[0]


# -- reading ------------------------------------------------------------------------------


def _as_list(value: object) -> list[str]:
    if isinstance(value, str):
        return [value] if value and not value.startswith("type=") else []
    if isinstance(value, list | tuple):
        return [str(v) for v in value if str(v)]
    return []


def _read(path: str, embedded: bool) -> list[str]:
    pyexiv2 = _pyexiv2()
    try:
        image = pyexiv2.Image(path)  # exiv2 opens the file read-only ("rb")
    except (RuntimeError, OSError) as exc:
        raise SidecarError(f"cannot read its metadata ({exc})") from exc
    try:
        try:
            xmp = image.read_xmp()
        except UnicodeDecodeError:
            xmp = image.read_xmp(encoding="latin-1")
        iptc: dict[str, object] = {}
        if embedded:
            try:
                iptc = image.read_iptc()
            except UnicodeDecodeError:  # IPTC without a UTF-8 charset: Latin-1 by habit
                iptc = image.read_iptc(encoding="latin-1")
    except RuntimeError as exc:
        raise SidecarError(f"cannot read its metadata ({exc})") from exc
    finally:
        image.close()
    return tags_from_keywords(
        _as_list(xmp.get(SUBJECT)),
        _as_list(xmp.get(TAGS_LIST)),
        _as_list(xmp.get(HIERARCHICAL)),
        _as_list(iptc.get(IPTC_KEYWORDS)),
    )


def read_photo_tags(photo: str) -> tuple[list[str], list[str]]:
    """The tags another app left for ``photo``: in its sidecars (both names) and in its
    own XMP and IPTC (read only); and why a source could not be read (what the others
    held is kept)."""
    found: list[str] = []
    problems: list[str] = []
    for source, embedded in [(s, False) for s in existing_sidecars(photo)] + [(photo, True)]:
        try:
            tags = _read(source, embedded)
        except SidecarError as exc:
            name = "the photo" if embedded else os.path.basename(source)
            problems.append(f"{name}: {exc}")
            continue
        found += [tag for tag in tags if tag not in found]
    return found, problems


# -- writing ------------------------------------------------------------------------------


def _temporary_copy(target: str) -> str:
    """A copy of ``target`` (or an empty packet) beside it, made by this process alone."""
    folder, name = os.path.split(target)
    tmp = os.path.join(folder, f".{name}.{uuid.uuid4().hex[:12]}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies
    try:
        with os.fdopen(fd, "wb") as out:
            if os.path.exists(target):
                with open(target, "rb") as src:
                    out.write(src.read())
            else:
                out.write(_EMPTY_PACKET.encode())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return tmp


def _real_target(target: str) -> str:
    """Where a sidecar's bytes are: the file a symlink points to (written through, so
    the link stays a link), else ``target``; a SidecarError for a link to nothing."""
    if not os.path.islink(target):
        return target
    real = os.path.realpath(target)
    if not os.path.exists(real):
        name = os.path.basename(target)
        raise SidecarError(f"{name} is a link to {real}, which is not there")
    return real


def write_sidecar(target: str, tags: Sequence[str], remove: Sequence[str] = ()) -> bool:
    """Add ``tags`` to the keywords of the sidecar at ``target`` (made when missing) and
    take out those of ``remove`` (tags the user rejected; a keyword one of ``tags`` also
    gives stays), keeping every other keyword and field; True when the sidecar changed.
    A sidecar that is a symlink is written through to the file it points to. An OSError
    when the folder cannot take a file, a SidecarError when the existing sidecar is no
    XMP that exiv2 reads (it is left as it was)."""
    name = os.path.basename(target)
    real = _real_target(target)
    if os.path.exists(real) and not os.access(real, os.W_OK):
        raise SidecarError(f"{name} is read-only")
    wanted = xmp_values(tags)
    dropped = xmp_values(remove)
    if not os.path.exists(real) and not any(wanted.values()):
        return False  # nothing to add, nothing to take out of a sidecar not there
    pyexiv2 = _pyexiv2()
    tmp = _temporary_copy(real)

    def said(exc: Exception) -> str:  # exiv2 names the copy: name the sidecar instead
        return str(exc).replace(tmp, target).replace(os.path.basename(tmp), name).strip()

    try:
        try:
            image = pyexiv2.Image(tmp)
        except RuntimeError as exc:
            raise SidecarError(f"{name} is no XMP that exiv2 reads ({said(exc)})") from exc
        try:
            try:
                had = image.read_xmp()
            except RuntimeError as exc:
                raise SidecarError(f"{name} is no XMP that exiv2 reads ({said(exc)})") from exc
            merged: dict[str, list[str]] = {}
            leaves: set[str] = set()  # the leaves of the paths the sidecar keeps
            for key in reversed(FIELDS):  # the paths first, then dc:subject
                values = wanted[key]
                old = _as_list(had.get(key))
                gone = set(dropped[key]) - set(values)
                if key == SUBJECT:  # a leaf another kept path gives stays
                    gone -= leaves
                kept = [v for v in old if v not in gone]
                new = kept + [v for v in values if v not in kept]
                sep = "/" if key == TAGS_LIST else "|"
                leaves |= {v.split(sep)[-1].strip() for v in new}
                if new != old or (values and not isinstance(had.get(key), list)):
                    merged[key] = new
            if merged:
                image.modify_xmp(merged)
        except RuntimeError as exc:
            raise SidecarError(f"exiv2 could not write {name} ({said(exc)})") from exc
        finally:
            image.close()
        if not merged:
            return False
        if os.path.exists(real):
            os.chmod(tmp, os.stat(real).st_mode & 0o7777)  # as the user had it
        fsync_file(tmp)
        os.replace(tmp, real)
        return True
    finally:
        Path(tmp).unlink(missing_ok=True)


# -- the library's photos -----------------------------------------------------------------


@dataclass
class SidecarReport:
    """What an export to sidecars did."""

    written: int = 0  # sidecars made or changed
    unchanged: int = 0  # sidecars that had every keyword already
    untagged: int = 0  # photos without a tag to write
    failed: list[tuple[str, str]] = field(default_factory=list)  # (photo, why)
    failed_folders: dict[str, tuple[str, int]] = field(default_factory=dict)  # why, photos


@dataclass
class ImportReport:
    """What an import of other apps' keywords did."""

    photos: int = 0  # photos read
    with_keywords: int = 0  # photos where a keyword was found
    added: int = 0  # (photo, tag) pairs newly imported
    already: int = 0  # already imported, confirmed or added by hand
    rejected: int = 0  # left out: the user rejected that tag for that photo
    from_model: int = 0  # left out: already an automatic tag of that photo
    tags: set[str] = field(default_factory=set)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (photo, why)


def library_photos(library: Library, target: str | None) -> list[tuple[int, str]]:
    """The library's photos (id, path) under ``target`` (a folder or one photo; None:
    all), by path."""
    query = select(db.Photo.id, db.Photo.path).order_by(db.Photo.path)
    if target is not None:
        query = query.where(under_folder(target) | (db.Photo.path == target))
    with library.session() as s:
        return [(int(pid), str(path)) for pid, path in s.execute(query)]


def _folder_error(exc: OSError) -> str:
    if exc.errno == errno.EROFS:
        return "the folder is on a read-only disk"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "the disk is full"
    return "the folder is read-only (no sidecar can be written there)"


def _rejected_names(library: Library, photo_ids: Sequence[int]) -> dict[int, list[str]]:
    """The tag names the user rejected (or removed) for each photo's content."""
    found: dict[int, list[str]] = defaultdict(list)
    with library.session() as s:
        for chunk in in_chunks(list(photo_ids)):
            rows = s.execute(
                select(db.Photo.id, db.TagMark.name)
                .join(db.TagMark, db.TagMark.fingerprint == db.Photo.fingerprint)
                .where(db.Photo.id.in_(chunk), db.TagMark.source == tag_marks.REJECTED)
                .order_by(db.TagMark.name)
            )
            for pid, name in rows:
                found[int(pid)].append(str(name))
    return found


def _own_sidecars(photo: str, stems_shared: bool) -> list[str]:
    """The photo's existing sidecars that are its alone: "IMG_1.jpg.xmp", and Lightroom's
    "IMG_1.xmp" unless another photo of the folder shares that name."""
    full, _short = sidecar_names(photo)
    return [s for s in existing_sidecars(photo) if s in full or not stems_shared]


def export_sidecars(
    library: Library,
    model_id: int | None,
    photos: Sequence[tuple[int, str]],
    with_auto: bool,
    report: SidecarReport,
    cancel: CancelToken | None = None,
) -> Iterator[Progress]:
    """Write the tags of ``photos`` (id, path) to their sidecars, folder by folder."""
    ordered = sorted(photos, key=lambda p: p[1])
    stems: dict[tuple[str, str], int] = defaultdict(int)
    for _pid, path in ordered:
        stems[(os.path.dirname(path), os.path.splitext(os.path.basename(path))[0])] += 1
    meter = RateMeter(len(ordered))
    step = max(1, len(ordered) // 200)
    for start in range(0, len(ordered), 500):
        chunk = ordered[start : start + 500]
        ids = [pid for pid, _path in chunk]
        tags = tag_marks.tags_by_photo(library, model_id, ids)
        rejected = _rejected_names(library, ids)
        for done, (pid, path) in enumerate(chunk, start + 1):
            if cancel is not None and cancel.cancelled:
                return
            folder = os.path.dirname(path)
            names = [t.label for t in tags.get(pid, []) if with_auto or t.source != tag_marks.AUTO]
            said_no = [name for name in rejected.get(pid, []) if name not in names]
            if not names and not (said_no and existing_sidecars(path)):
                report.untagged += 1
            elif folder in report.failed_folders:
                why, count = report.failed_folders[folder]
                report.failed_folders[folder] = (why, count + 1)
            elif not os.path.isdir(folder):
                report.failed_folders[folder] = ("the folder is not there (its disk away?)", 1)
            elif not os.path.isfile(path):
                report.failed.append((path, "the photo is not there (moved, or deleted)"))
            else:
                stem = os.path.splitext(os.path.basename(path))[0]
                shared = stems[(folder, stem)] > 1
                target = sidecar_to_write(path, shared)
                try:
                    changed = write_sidecar(target, names, said_no)
                    # A rejected keyword goes from the photo's other sidecar too (not from
                    # a Lightroom sidecar its namesakes share: their keywords are there).
                    for other in _own_sidecars(path, shared):
                        if not (os.path.exists(target) and os.path.samefile(other, target)):
                            changed |= write_sidecar(other, [], said_no)
                except SidecarError as exc:
                    report.failed.append((path, str(exc)))
                except OSError as exc:
                    if exc.errno in _FOLDER_ERRNOS:
                        report.failed_folders[folder] = (_folder_error(exc), 1)
                    else:
                        report.failed.append((path, exc.strerror or str(exc)))
                else:
                    report.written += changed
                    if not changed and not names:
                        report.untagged += 1  # no tag, no rejected keyword in its sidecar
                    else:
                        report.unchanged += not changed
            if done % step == 0 or done == len(ordered):
                failed = len(report.failed) + sum(n for _w, n in report.failed_folders.values())
                yield meter.report("tag", done, failed, "sidecars")
                meter.resumed()


def import_keywords(
    library: Library,
    photos: Sequence[tuple[int, str]],
    report: ImportReport,
    cancel: CancelToken | None = None,
    model_id: int | None = None,
) -> Iterator[Progress]:
    """Read other apps' keywords for ``photos`` (id, path) and keep them as imported tags;
    a tag the user confirmed, added or rejected for a photo stays as the user said, and a
    keyword that is already the photo's automatic tag under ``model_id`` (the serving
    model) is left as the model's guess: an export then import must not make it a tag
    the user gave."""
    ordered = sorted(photos, key=lambda p: p[1])
    meter = RateMeter(len(ordered))
    step = max(1, len(ordered) // 200)
    by_tag: dict[str, list[int]] = defaultdict(list)
    for done, (pid, path) in enumerate(ordered, 1):
        if cancel is not None and cancel.cancelled:
            break
        if not os.path.isfile(path):
            report.failed.append((path, "the photo is not there (moved, or its disk away)"))
        else:
            found, problems = read_photo_tags(path)
            report.failed += [(path, why) for why in problems]
            report.photos += 1
            report.with_keywords += bool(found)
            for tag in found:
                by_tag[tag].append(pid)
        if done % step == 0 or done == len(ordered):
            yield meter.report("tag", done, len(report.failed), "import")
            meter.resumed()
    # What was read before a cancel is kept: each tag is one transaction.
    rejected = tag_marks.rejected_photo_ids(library, list(by_tag))
    guessed: dict[str, set[int]] = defaultdict(set)
    if model_id is not None:
        every = sorted({pid for ids in by_tag.values() for pid in ids})
        for pid, given in tag_marks.tags_by_photo(library, model_id, every, by_tag).items():
            for auto in given:
                if auto.source == tag_marks.AUTO:
                    guessed[auto.label].add(pid)
    for tag, all_ids in by_tag.items():
        ids = [pid for pid in all_ids if pid not in guessed[tag]]
        report.from_model += len(all_ids) - len(ids)
        if not ids:
            continue
        change = tag_marks.set_marks(library, ids, tag, tag_marks.IMPORTED, keep=tag_marks.MARKS)
        added = change.changed
        refused = len(set(ids) & rejected[tag])
        report.added += added
        report.rejected += refused
        report.already += len(ids) - added - refused
        if added:
            report.tags.add(tag)
