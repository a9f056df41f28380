"""``clipdesk tags``: the user's word on tags (confirm, reject, add, remove) and their
listing (parsing and output only; the marks are the facade's: ``Clipdesk.mark_tag``)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from clipdesk.wording import plural, printable

if TYPE_CHECKING:
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


def run_tags_command(app: Clipdesk, args: argparse.Namespace) -> int:
    """Run ``clipdesk tags ACTION``: 0 when every photo was found, 1 when some path was
    none of the library's photos (the others are marked all the same)."""
    command = args.tags_command
    if command == "list":
        return _list(app, args)
    source, done, with_set = _MARKS[command]
    if with_set:
        app.check_label(args.labels, args.tag)
    photos, missing = app.photos_at(args.paths)
    for path in missing:
        print(
            printable(f"error: {path}: not a photo of the library (see `clipdesk status`)"),
            file=sys.stderr,
        )
    if photos:
        change = app.mark_tag(args.tag, [p.id for p in photos], source)
        unchanged = len(photos) - change.changed
        note = f" ({unchanged} already so)" if unchanged else ""
        print(printable(f"{done} {args.tag!r} on {plural(len(photos), 'photo')}{note}"))
    return 1 if missing else 0


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
    for path in missing:
        print(printable(f"error: {path}: not a photo of the library"), file=sys.stderr)
    tags = app.tags_of([p.id for p in photos])
    if args.json:
        rows = [{"path": p.path, "tags": [t.as_json() for t in tags.get(p.id, [])]} for p in photos]
        print(json.dumps(rows, indent=1))
    else:
        for photo in photos:
            described = "; ".join(t.described for t in tags.get(photo.id, [])) or "no tags"
            print(printable(f"{photo.path}: {described}"))
    return 1 if missing else 0
