"""``clipdesk albums``: save, list, show, rename and delete smart albums (parsing and
output only; the albums are the facade's: ``Clipdesk.save_album`` and the verbs beside)."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from clipdesk.cli.options import add_filter_options, add_ranking_options, filters_of
from clipdesk.wording import plural, printable

if TYPE_CHECKING:
    from clipdesk.services import Clipdesk


def add_albums_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    albums = sub.add_parser(
        "albums",
        help="smart albums: saved searches that fill themselves as photos are indexed",
        description="A smart album is a search with a name: its query (terms and filters), "
        "its relevance cutoff and its order. It runs again each time it is shown, so it "
        "follows new, moved and deleted photos and a model switch.",
    )
    asub = albums.add_subparsers(dest="albums_command", metavar="ACTION", required=True)

    save = asub.add_parser("save", help="save a search as an album")
    save.add_argument("name", metavar="NAME", help="the album's name")
    save.add_argument(
        "query",
        metavar="QUERY",
        help="what to look for, as in `clipdesk search` (filters typed in it count too)",
    )
    add_ranking_options(save, cutoff_default="auto")
    add_filter_options(save)
    save.add_argument(
        "--replace", action="store_true", help="replace an album of that name if there is one"
    )

    listing = asub.add_parser("list", help="the albums, with how many photos each shows")
    listing.add_argument("--json", action="store_true", help="print JSON")

    show = asub.add_parser("show", help="the album's photos now")
    show.add_argument("name", metavar="NAME", help="an album from `clipdesk albums list`")
    show.add_argument("--json", action="store_true", help="print JSON (path, score, ...)")

    rename = asub.add_parser("rename", help="give an album another name")
    rename.add_argument("name", metavar="NAME")
    rename.add_argument("new_name", metavar="NEW")

    delete = asub.add_parser("delete", help="delete an album (no photo is touched)")
    delete.add_argument("name", metavar="NAME")


def stored_query(args: argparse.Namespace) -> str:
    """QUERY with the filters given as options written into it, as the search field
    would show them (a bad date or type is a QueryError naming the option)."""
    from clipdesk.search.query import (  # on use: --help starts fast
        ParsedQuery,
        format_query,
        parse_query,
    )

    options = filters_of(args)
    if options.is_empty():
        return str(args.query)
    parsed = parse_query(args.query)
    return format_query(ParsedQuery(parsed.terms, parsed.filters.merged(options)))


def run_albums_command(app: Clipdesk, args: argparse.Namespace) -> int:
    """Run ``clipdesk albums ACTION``; errors are ClipdeskErrors (the caller prints them
    in one line and exits 2)."""
    command = args.albums_command
    if command == "save":
        album = app.save_album(
            args.name,
            stored_query(args),
            cutoff=args.cutoff == "auto",
            sort=args.sort,
            k=args.k,
            replace=args.replace,
        )
        print(f"saved the album {printable(album.name)}: {printable(album.query)}")
    elif command == "list":
        albums = app.albums()
        if args.json:
            print(json.dumps([a.as_json() for a in albums], indent=1))
            return 0
        if not albums:
            print('no albums yet: `clipdesk albums save NAME "QUERY"` saves one')
        for entry in albums:
            count = plural(entry.count, "photo") if entry.count is not None else "cannot run"
            line = f"{printable(entry.album.name)}  ({count})  {printable(entry.album.query)}"
            print(line + (f"  [{printable(entry.error)}]" if entry.error else ""))
    elif command == "show":
        ranking = app.album(args.name)
        if args.json:
            print(json.dumps([hit.as_json() for hit in ranking.hits], indent=1))
            return 0
        if not ranking.hits:
            print("no photo in this album (yet)")
        for hit in ranking.hits:
            print(f"{hit.score:.4f}  {printable(hit.path)}")
    elif command == "rename":
        album = app.rename_album(args.name, args.new_name)
        print(f"renamed the album {printable(args.name)} to {printable(album.name)}")
    elif command == "delete":
        app.delete_album(args.name)
        print(f"deleted the album {printable(args.name)} (no photo was touched)")
    return 0
