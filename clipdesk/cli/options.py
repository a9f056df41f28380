"""Options that several commands share: counts, and the search's cutoff, order and filters
(``search``, ``similar``, ``albums save``), checked as the same filters typed in a query."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from clipdesk.search.query import Filters

DEFAULT_K = 20
CUTOFF_DEFAULT_K = 200  # clipdesk.search.ranking.CUTOFF_K (not imported: --help starts fast)


def positive_int(text: str) -> int:
    """argparse type for counts: a clear usage error (exit 2) for 0, -1 or "ten"."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def add_ranking_options(cmd: argparse.ArgumentParser, cutoff_default: str | None) -> None:
    """-k, --cutoff and --sort."""
    cmd.add_argument(
        "-k",
        type=positive_int,
        default=None,
        metavar="N",
        help=f"at most N results (default {DEFAULT_K}, or {CUTOFF_DEFAULT_K} with --cutoff auto)",
    )
    cmd.add_argument(
        "--cutoff",
        choices=("auto", "none"),
        default=cutoff_default,
        help="auto: only the photos this query's scores say are relevant (may be none); "
        "none: the best N"
        + (
            f" (default: {cutoff_default})"
            if cutoff_default
            else " (the default, unless --sort is a date order)"
        ),
    )
    cmd.add_argument(
        "--sort",
        choices=("relevance", "newest", "oldest"),
        default="relevance",
        help="order of the results; a date order sorts the relevant photos (--cutoff auto)",
    )


def add_filter_options(cmd: argparse.ArgumentParser) -> None:
    """The filters, each as typed in a query (README: the search syntax)."""
    cmd.add_argument(
        "--folder", action="append", default=[], metavar="DIR", help="only photos in DIR"
    )
    cmd.add_argument("--after", metavar="DATE", help="taken on or after DATE (YYYY[-MM[-DD]])")
    cmd.add_argument("--before", metavar="DATE", help="taken before DATE (YYYY[-MM[-DD]])")
    cmd.add_argument(
        "--tag", action="append", default=[], metavar="LABEL", help="only photos tagged LABEL"
    )
    cmd.add_argument(
        "--type", action="append", default=[], metavar="EXT", help="only files of type EXT (jpeg)"
    )
    cmd.add_argument("--orientation", choices=("landscape", "portrait", "square"))
    cmd.add_argument("--camera", action="append", default=[], metavar="MODEL", help="camera model")
    cmd.add_argument(
        "--minpx", metavar="PIXELS", help="at least this many pixels (8M, 500k, 1920x1080)"
    )


def filters_of(args: argparse.Namespace) -> Filters:
    """The filters given as options (a bad value is a QueryError naming the option)."""
    from clipdesk.search.query import filters_from_options  # on use: --help starts fast

    return filters_from_options(
        folders=args.folder,
        after=args.after,
        before=args.before,
        tags=args.tag,
        types=args.type,
        orientation=args.orientation,
        cameras=args.camera,
        min_pixels=args.minpx,
    )
