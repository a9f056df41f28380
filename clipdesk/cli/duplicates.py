"""``clipdesk duplicates``: list exact copies and near-duplicates, trash what the suggestion
drops (only with ``--yes``), and list what was trashed (parsing and output only; the work
is the facade's: ``Clipdesk.duplicates``, ``trash_duplicates``, ``trash_log``)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import TYPE_CHECKING

from clipdesk.errors import ClipdeskError
from clipdesk.wording import human_size, plural, printable

if TYPE_CHECKING:
    from clipdesk.duplicates.finding import DuplicateGroup, DuplicateReport, Member
    from clipdesk.services import Clipdesk


def _threshold(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"a cosine similarity above 0, up to 1 (not {text})")
    return value


def add_duplicates_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    cmd = sub.add_parser(
        "duplicates",
        help="find exact copies, near-duplicates and bursts; trash the extra ones",
        description="Groups of exact copies (same content) and near-duplicates (resized, "
        "re-encoded, cropped, edited copies; bursts) found from the stored vectors, each "
        "with the photo suggested to keep first. Nothing is moved unless you add "
        "--trash-suggested and --yes; then the others go to the system trash.",
    )
    cmd.add_argument("folder", nargs="?", metavar="FOLDER", help="default: the whole library")
    cmd.add_argument(
        "--threshold",
        type=_threshold,
        metavar="T",
        help="cosine similarity from which photos are near-duplicates (default: derived "
        "from the library's own nearest-neighbour distances, printed with the groups)",
    )
    cmd.add_argument("--exact", action="store_true", help="exact copies only (same content)")
    cmd.add_argument("--json", action="store_true", help="print JSON (groups of path, score, keep)")
    cmd.add_argument(
        "--trash-suggested",
        action="store_true",
        help="move every photo but the suggested one of each group to the system trash "
        "(prints what it would do unless --yes is given too)",
    )
    cmd.add_argument("--yes", action="store_true", help="confirm --trash-suggested")
    cmd.add_argument(
        "--undo-list",
        action="store_true",
        help="list the photos clipdesk moved to the trash, and where each went",
    )


def run_duplicates_command(app: Clipdesk, args: argparse.Namespace) -> int:
    """Run ``clipdesk duplicates``; errors are ClipdeskErrors (printed by the caller)."""
    if args.undo_list:
        return _print_trash_log(app, args.json)
    if args.yes and not args.trash_suggested:
        raise ClipdeskError("--yes confirms --trash-suggested: add it to trash anything")
    if args.exact and args.threshold is not None:
        raise ClipdeskError(
            "--exact finds copies of the same content, which has no threshold: "
            "drop --threshold, or drop --exact to find near-duplicates from T"
        )
    if not args.exact:
        _compare(app)
    report = app.duplicates(args.folder, args.threshold, args.exact)
    if args.trash_suggested:
        return _trash(app, report, args)
    if args.json:
        print(json.dumps(report.as_json(), indent=1))
        return 0
    _print_groups(report)
    return 0


def _compare(app: Clipdesk) -> None:
    from clipdesk.cli.main import ProgressBar  # on use: --help starts fast
    from clipdesk.cli.output import cancel_on_interrupt  # on use: --help starts fast

    progress_bar = ProgressBar(sys.stderr)
    with cancel_on_interrupt() as cancel:
        try:
            for progress in app.compare_photos(cancel):
                progress_bar.update(progress)
        finally:
            progress_bar.close()
    if cancel.cancelled:
        raise KeyboardInterrupt


def _print_threshold(report: DuplicateReport) -> None:
    if report.threshold is not None:
        print(f"threshold {report.threshold.value:.4f} ({report.threshold.how})")


def _print_groups(report: DuplicateReport) -> None:
    _print_threshold(report)
    if not report.groups:
        print(f"no duplicates among {plural(report.photos, 'photo')}")
        return
    print(
        "each photo: keep?, merit as the one to keep (0-1: pixels, sharpness, EXIF, "
        "original name, bytes), size, pixels, path, likeness to the kept one"
    )
    for number, group in enumerate(report.groups, 1):
        _print_group(number, group)
    extra = sum(len(g.members) - 1 for g in report.groups)
    print(
        f"{plural(len(report.groups), 'group')}, {plural(extra, 'photo')} beside the ones to "
        f"keep: {human_size(report.freed)} to free "
        "(`--trash-suggested` shows what would go to the trash)"
    )


def _print_group(number: int, group: DuplicateGroup) -> None:
    print(f"group {number}: {plural(len(group.members), 'photo')}, {group.kind}")
    for member in group.members:
        f = member.facts
        pixels = f"{f.width}x{f.height}" if f.width and f.height else "?x?"
        label = "keep" if member.keep else "    "
        if member.keep:
            similar = ""
        elif member.facts.fingerprint == member.kept_fingerprint:
            similar = "  exact copy"
        else:
            similar = f"  similarity {member.similarity:.4f}"
        print(
            f"  {label}  {member.score:.4f}  {human_size(f.size):>8}  {pixels:>11}  "
            f"{printable(f.path)}{similar}"
        )
    print(f"  kept first: {'; '.join(group.why)}")


def _trash(app: Clipdesk, report: DuplicateReport, args: argparse.Namespace) -> int:
    drops = [(g, m) for g in report.groups for m in g.to_drop()]
    if not drops:
        print("no duplicates: nothing to trash")
        return 0
    if args.json and not args.yes:
        print(json.dumps(report.as_json(), indent=1))
        return 0
    if report.threshold is not None:
        _print_threshold(report)
        if report.threshold.derived:
            print(
                "  (it moves as the library changes, after each trash too: look again "
                "before another --yes, or give --threshold T to keep it)"
            )
    _warn_tags(drops)
    if not args.yes:
        for group, member in drops:
            print(f"would trash {printable(member.path)}  (keeping {printable(group.kept.path)})")
        print(
            f"{plural(len(drops), 'photo')}, {human_size(report.freed)}: nothing was moved; "
            "add --yes to move them to the system trash"
        )
        return 0
    result = app.trash_duplicates(report.groups)
    for trashed in result.trashed:
        where = printable(trashed.trash_path) if trashed.trash_path else "the system trash"
        print(f"trashed {printable(trashed.path)} -> {where}")
    for path, why in result.failed:
        print(f"clipdesk: error: not trashed: {printable(path)}: {why}", file=sys.stderr)
    freed = sum(t.size for t in result.trashed)
    print(
        f"{plural(len(result.trashed), 'photo')} moved to the trash ({human_size(freed)}); "
        "`clipdesk duplicates --undo-list` lists them"
    )
    return 1 if result.failed else 0


def _warn_tags(drops: list[tuple[DuplicateGroup, Member]]) -> None:
    for group, member in drops:
        if member.tags_lost:
            print(
                f"warning: {printable(member.path)} has tags the kept photo "
                f"({printable(group.kept.path)}) lacks: {', '.join(member.tags_lost)}"
            )


def _print_trash_log(app: Clipdesk, as_json: bool) -> int:
    log = app.trash_log()
    if as_json:
        print(json.dumps([t.as_json() for t in log], indent=1))
        return 0
    if not log:
        print("clipdesk has moved no photo to the trash")
        return 0
    for t in log:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(t.trashed_at))
        where = printable(t.trash_path) if t.trash_path else "the system trash"
        if t.restored:
            where = "restored (the file is back at its place)"
        print(f"{when}  {printable(t.path)}  -> {where}")
    print("to undo, move a file back from the trash to where it was, then `clipdesk index`")
    return 0
