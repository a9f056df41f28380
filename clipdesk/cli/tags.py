"""``clipdesk tags``: the user's word on tags (confirm, reject, add, remove), their
listing, and tags in other apps: ``export --xmp`` (sidecars), ``export --csv/--json``
and ``import`` (parsing and output only; the work is the facade's: ``Clipdesk.mark_tag``,
``export_tags_xmp``, ``import_tags``, ``tag_table``)."""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from clipdesk.wording import plural, printable

if TYPE_CHECKING:
    from clipdesk.progress import CancelToken, Progress
    from clipdesk.services import Clipdesk

# action: (source it marks, past tense, whether it names a label set)
_MARKS = {
    "confirm": ("confirmed", "confirmed", True),
    "reject": ("rejected", "rejected", True),
    "add": ("manual", "added", False),
    "remove": ("rejected", "removed", False),
}


def add_tags_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    tags = sub.add_parser(
        "tags",
        help="confirm, reject, add and remove tags by hand; list them",
        description="What you say of a tag sticks: it is kept by the photo's content, so it "
        "survives renames, moves, re-runs of `clipdesk tag` and a model switch. A confirmed "
        "or added tag stays; a rejected or removed one is never given again by `clipdesk tag`.",
    )
    tsub = tags.add_subparsers(dest="tags_command", metavar="ACTION", required=True)
    for action, (_source, _done, with_set) in _MARKS.items():
        helps = {
            "confirm": "say a label of a set is right for these photos",
            "reject": "say a label of a set is wrong for these photos (never given again)",
            "add": "give these photos a tag of your own",
            "remove": "take a tag off these photos (any source; never given again)",
        }
        parser = tsub.add_parser(action, help=helps[action])
        if with_set:
            parser.add_argument(
                "--labels", required=True, metavar="SET", help="the label set the label is in"
            )
            parser.add_argument("tag", metavar="LABEL", help="a label of the set")
        else:
            parser.add_argument("tag", metavar="TAG", help="the tag, in words (quote spaces)")
        parser.add_argument("paths", nargs="+", metavar="PATH", help="photos of the library")
    listing = tsub.add_parser("list", help="every tag with its number of photos")
    listing.add_argument("paths", nargs="*", metavar="PATH", help="only these photos' tags")
    listing.add_argument("--json", action="store_true", help="print JSON")
    export = tsub.add_parser(
        "export",
        help="write tags as XMP keywords for digiKam, darktable and Lightroom, or to a file",
        description="--xmp writes each photo's tags to its XMP sidecar (IMG_1.jpg.xmp, or "
        "Lightroom's IMG_1.xmp where it exists): dc:subject, digiKam:TagsList and "
        "lr:hierarchicalSubject, merged with the keywords and fields already there. The "
        "photos themselves are never written; a keyword you rejected or removed for a photo is "
        "taken out of its sidecar. --csv writes one row per photo and tag, --json one entry "
        "per photo.",
    )
    export.add_argument(
        "folder", nargs="?", metavar="FOLDER", help="only photos under this folder (or one photo)"
    )
    form = export.add_mutually_exclusive_group(required=True)
    form.add_argument("--xmp", action="store_true", help="write XMP sidecars beside the photos")
    form.add_argument(
        "--csv",
        metavar="FILE",
        help="write a CSV file: one row per photo and tag: path, tag, source, score",
    )
    form.add_argument(
        "--json", metavar="FILE", help="write a JSON file: path and tags (label, score, source)"
    )
    export.add_argument(
        "--no-auto",
        action="store_true",
        help="leave the model's automatic tags out: only the tags you confirmed, added or imported",
    )
    imported = tsub.add_parser(
        "import",
        help="read keywords from XMP sidecars and the photos' XMP/IPTC as tags",
        description="Keywords of digiKam, darktable, Lightroom and other apps become tags of "
        "source 'imported': from IMG_1.jpg.xmp and IMG_1.xmp sidecars and from the XMP and "
        "IPTC inside the photos (only read). A tag you confirmed, added or rejected for a "
        "photo stays as you said.",
    )
    imported.add_argument(
        "folder", nargs="?", metavar="FOLDER", help="only photos under this folder (or one photo)"
    )


def run_tags_command(app: Clipdesk, args: argparse.Namespace) -> int:
    """Run ``clipdesk tags ACTION``: 0 when every photo was found, 1 when some path was
    none of the library's photos (the others are marked all the same)."""
    command = args.tags_command
    if command == "list":
        return _list(app, args)
    if command == "export":
        return _export(app, args)
    if command == "import":
        return _import(app, args)
    source, done, with_set = _MARKS[command]
    if with_set:
        app.check_label(args.labels, args.tag)
    photos, missing = app.photos_at(args.paths)
    _say_missing(missing)
    note = ""
    if photos and command == "remove":
        tags = app.tags_of([p.id for p in photos])
        wanted = _same_tag(args.tag)
        having = [p for p in photos if any(wanted(t.label) for t in tags.get(p.id, []))]
        if not having:
            theirs = sorted({t.label for ts in tags.values() for t in ts}, key=str.casefold)
            listed = ", ".join(theirs) if theirs else "none"
            print(
                printable(
                    f"error: {args.tag!r} is not a tag of these photos (their tags: {listed})"
                ),
                file=sys.stderr,
            )
            return 1
        if len(having) < len(photos):
            note = f" ({len(photos) - len(having)} did not have it)"
        photos = having
    if photos:
        change = app.mark_tag(args.tag, [p.id for p in photos], source)
        unchanged = len(photos) - change.changed
        if unchanged:
            note = f" ({unchanged} already so)" + note
        print(printable(f"{done} {change.name!r} on {plural(len(photos), 'photo')}{note}"))
    return 1 if missing else 0


def _same_tag(name: str) -> Callable[[str], bool]:
    """Whether a tag is the one ``name`` means: as the library keeps names (one Unicode
    form, trimmed; differing only in case is the same tag)."""
    from clipdesk.library.tags import clean_tag_name  # on use: --help starts fast

    try:
        cleaned = clean_tag_name(name).casefold()
    except ValueError:  # no tag can have that name: mark_tag says why
        return lambda _label: True
    return lambda label: label.casefold() == cleaned


def _say_missing(missing: list[str]) -> None:
    """One error per path that is no photo of the library; a folder is told apart."""
    for path in missing:
        if Path(path).is_dir():
            inside = Path(path) / "*"
            why = f"is a folder: give its photos (e.g. {inside})"
        else:
            why = "not a photo of the library (see `clipdesk status`)"
        print(printable(f"error: {path}: {why}"), file=sys.stderr)


def _list(app: Clipdesk, args: argparse.Namespace) -> int:
    if not args.paths:
        counts = app.status().tags
        if args.json:
            print(json.dumps([{"tag": t, "photos": n} for t, n in counts.items()], indent=1))
        elif not counts:
            print("no tags yet: `clipdesk tag --labels SET` or `clipdesk tags add TAG PATH...`")
        for tag, count in counts.items():
            if not args.json:
                print(printable(f"{tag}: {plural(count, 'photo')}"))
        return 0
    photos, missing = app.photos_at(args.paths)
    _say_missing(missing)
    tags = app.tags_of([p.id for p in photos])
    if args.json:
        rows = [{"path": p.path, "tags": [t.as_json() for t in tags.get(p.id, [])]} for p in photos]
        print(json.dumps(rows, indent=1))
    else:
        # One tag a line: a tag name may hold any separator ("; ", ", ").
        for photo in photos:
            given = tags.get(photo.id, [])
            print(printable(f"{photo.path}:" + ("" if given else " no tags")))
            for one in given:
                print(printable(f"  {one.described}"))
    return 1 if missing else 0


def _drawn(run: Callable[[CancelToken], Iterator[Progress]], verb: str) -> bool:
    """Run a service, drawing its progress on stderr; False when Ctrl+C stopped it."""
    from clipdesk.cli.output import StatusLine, bar, cancel_on_interrupt  # on use: fast --help

    line = StatusLine(sys.stderr)
    with cancel_on_interrupt() as cancel:
        try:
            for p in run(cancel):
                fails = f", {p.failed} failed" if p.failed else ""
                line.show(f"{verb} {bar(p.fraction)} {p.done}/{p.total}{fails}", p.done == p.total)
        finally:
            line.end()
    return not cancel.cancelled


def _export(app: Clipdesk, args: argparse.Namespace) -> int:
    with_auto = not args.no_auto
    if not args.xmp:
        return _export_table(app, args, with_auto)
    from clipdesk.tagging.xmp import SidecarReport  # on use: --help starts fast

    report = SidecarReport()
    finished = _drawn(
        lambda cancel: app.export_tags_xmp(args.folder, report, with_auto, cancel), "sidecars"
    )
    for folder, (why, count) in sorted(report.failed_folders.items()):
        print(
            printable(f"error: {folder}: {why}; {plural(count, 'photo')} not written"),
            file=sys.stderr,
        )
    for path, why in report.failed:
        print(printable(f"error: {path}: {why}"), file=sys.stderr)
    failed = len(report.failed) + sum(n for _why, n in report.failed_folders.values())
    parts = [f"{plural(report.written, 'sidecar')} written"]
    if report.unchanged:
        parts.append(f"{report.unchanged} already up to date")
    if report.untagged:
        parts.append(f"{plural(report.untagged, 'photo')} without tags")
    summary = ", ".join(parts)
    if failed:
        folders = len(report.failed_folders)
        where = f" ({plural(folders, 'folder')} not writable)" if folders else ""
        summary += f"; {plural(failed, 'photo')} not written{where}: see the errors above"
    print(printable(summary if finished else f"stopped: {summary}"))
    if not finished:
        return 130
    return 1 if failed else 0


def _export_table(app: Clipdesk, args: argparse.Namespace, with_auto: bool) -> int:
    from clipdesk.files import atomic_write  # on use: --help starts fast

    target = Path(args.csv or args.json)
    folder = target.expanduser().absolute().parent
    if not folder.is_dir():  # a typo in the path: no folder is made for it
        print(printable(f"error: no such folder: {folder}"), file=sys.stderr)
        return 2
    rows = app.tag_table(args.folder, with_auto)
    if args.json:
        data = [{"path": path, "tags": [t.as_json() for t in tags]} for path, tags in rows]
        text = json.dumps(data, indent=1, ensure_ascii=False) + "\n"
    else:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        # One row per (photo, tag), so a tag holding any separator reads back whole; a
        # photo without tags is one row with the tag empty.
        writer.writerow(["path", "tag", "source", "score"])
        for path, tags in rows:
            if not tags:
                writer.writerow([path, "", "", ""])
            for t in tags:
                writer.writerow(
                    [path, t.label, t.source, "" if t.score is None else f"{t.score:.6f}"]
                )
        text = out.getvalue()
    atomic_write(target.expanduser().absolute(), text.encode(), shared=True)
    tagged = sum(1 for _path, tags in rows if tags)
    print(
        printable(
            f"wrote {target}: {plural(len(rows), 'photo')}, {tagged} with tags"
            + ("" if with_auto else " (automatic tags left out)")
        )
    )
    return 0


def _import(app: Clipdesk, args: argparse.Namespace) -> int:
    from clipdesk.tagging.xmp import ImportReport  # on use: --help starts fast

    report = ImportReport()
    finished = _drawn(lambda cancel: app.import_tags(args.folder, report, cancel), "reading")
    for path, why in report.failed:
        print(printable(f"error: {path}: {why}"), file=sys.stderr)
    summary = (
        f"read {plural(report.photos, 'photo')}, {report.with_keywords} with keywords: "
        f"{plural(report.added, 'tag')} imported ({plural(len(report.tags), 'name')})"
        f", {report.already} already there"
    )
    if report.from_model:
        summary += f", {report.from_model} already tags from the model"
    if report.rejected:
        summary += f", {report.rejected} left out because you rejected them"
    if report.failed:
        summary += f"; {len(report.failed)} could not be read"
    print(printable(summary if finished else f"stopped (what was read is kept): {summary}"))
    if not finished:
        return 130
    return 1 if report.failed else 0
