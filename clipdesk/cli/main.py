"""The ``clipdesk`` command line: argument parsing, progress bars and output only.

All work is done by :mod:`clipdesk.services`; this module draws and prints. The rooms are
imported inside each command (one-line reasons there): ``clipdesk --help`` starts without
SQLAlchemy, numpy, torch or Qt (``bench/bench_startup.py``). Over 600 lines because it
is the whole command line but ``models``, ``albums``, ``tags`` and ``duplicates``: argument
definitions and printing.
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import json
import logging
import os
import shlex
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from clipdesk import __version__
from clipdesk.cli.options import (
    add_filter_options,
    add_ranking_options,
    filters_of,
    positive_int,
)
from clipdesk.cli.output import StatusLine, bar, cancel_on_interrupt, duration, plural, printable
from clipdesk.errors import ClipdeskError
from clipdesk.progress import Phase, Progress

if TYPE_CHECKING:
    from clipdesk.search.query import Filters
    from clipdesk.services import Clipdesk
    from clipdesk.spec import ModelSpec


def _add_search_options(cmd: argparse.ArgumentParser) -> None:
    """The options ``search`` and ``similar`` share."""
    add_ranking_options(cmd, cutoff_default=None)
    cmd.add_argument("--json", action="store_true", help="print JSON (path, score, ...)")
    add_filter_options(cmd)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clipdesk",
        description="Explore your photo folders by meaning: search by text, by image, "
        "or find similar photos. Your photos are only ever read.",
    )
    parser.add_argument("--version", action="version", version=f"clipdesk {__version__}")
    parser.add_argument(
        "--library",
        metavar="DIR",
        help="library folder (database, index, caches); default: $CLIPDESK_LIBRARY or the "
        "user data folder",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show library log messages")
    parser.add_argument(
        "--self-test",
        action="store_true",
        help="check this installation: index sample photos with the bundled test model in a "
        "temporary folder, search, open the window offscreen; exit 0 only if all is right",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    add = sub.add_parser("add", help="add photo folders to the library")
    add.add_argument(
        "folders", nargs="+", metavar="FOLDER", help="a folder of photos (and its subfolders)"
    )

    remove = sub.add_parser("remove", help="remove a folder from the library (files untouched)")
    remove.add_argument("folder", metavar="FOLDER", help="a folder added before")

    index = sub.add_parser("index", help="scan the folders and embed new photos")
    index.add_argument(
        "--model",
        metavar="SPEC",
        help="ARCH:PRETRAINED, e.g. ViT-B-32:laion2b_s34b_b79k (default), "
        "ViT-B-32:/path/weights.safetensors, or ARCH:random (tests and benchmarks only)",
    )
    index.add_argument(
        "--model-config",
        metavar="FILE.json",
        help="register a custom open_clip architecture from its JSON config",
    )
    index.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default=None)
    index.add_argument("--batch-size", type=positive_int, default=32, metavar="N")
    index.add_argument(
        "--cores", type=int, metavar="N", help="use at most N CPU cores (default: all)"
    )
    index.add_argument(
        "--low-priority",
        action="store_true",
        help="run at a lower priority, so other programs stay responsive",
    )
    index.add_argument(
        "--backend",
        metavar="NAME",
        help="image encoder backend: auto (measure once, keep the fastest faithful; default), "
        "torch-fp32, torch-bf16, torch-fp16, openvino-fp32 or openvino-bf16 (either with "
        "-streams: batches split over parallel OpenVINO requests)",
    )
    index.add_argument(
        "--remeasure",
        action="store_true",
        help="measure the encoder backends again for this model and device (a choice "
        "measured while the computer was busy is measured again by itself)",
    )

    search = sub.add_parser(
        "search",
        help="find photos matching a text",
        description="Find photos by meaning. TEXT may weigh, add and subtract terms, name "
        "images and carry filters: 'beach -people', '2:sunset + ./boat.jpg', "
        "'beach in:Holidays after:2023-07 before:2023-08' (see the README's search syntax).",
    )
    search.add_argument("text", metavar="TEXT", help="what to look for, in words")
    similar = sub.add_parser(
        "similar",
        help="find photos similar to one or more images",
        description="Photos like the given ones (several: like all of them).",
    )
    similar.add_argument(
        "path", nargs="+", metavar="PATH", help="an image file: a photo in the library or any other"
    )
    for cmd in (search, similar):
        _add_search_options(cmd)

    labels = sub.add_parser("labels", help="label sets for zero-shot tagging")
    labels_sub = labels.add_subparsers(dest="labels_command", metavar="ACTION", required=True)
    create = labels_sub.add_parser("create", help="create (or replace) a label set")
    create.add_argument("name", metavar="NAME", help="the set's name, e.g. trips")
    create.add_argument(
        "labels", nargs="+", metavar="LABEL", help='a label in words, e.g. "a beach" (quote spaces)'
    )
    labels_sub.add_parser("list", help="show the label sets")
    delete = labels_sub.add_parser("delete", help="delete a label set and its tags")
    delete.add_argument("name", metavar="NAME", help="a set from `clipdesk labels list`")

    tag = sub.add_parser("tag", help="tag indexed photos with a label set (no re-embedding)")
    tag.add_argument("folder", nargs="?", metavar="FOLDER", help="default: the whole library")
    tag.add_argument("--labels", required=True, metavar="NAME", help="the label set to use")
    tag.add_argument("--multi", action="store_true", help="any number of labels per photo")
    tag.add_argument(
        "--prompts",
        choices=["ensemble", "single"],
        default="ensemble",
        help="prompt templates per label: the CLIP paper's ensemble (default) or one",
    )
    tag.add_argument("--json", action="store_true", help="print each photo's tags as JSON")
    tag.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=argparse.SUPPRESS,
        help="list each photo's tags (default: a summary)",
    )

    from clipdesk.cli.albums import add_albums_parser  # on use: --help starts fast
    from clipdesk.cli.duplicates import add_duplicates_parser  # on use: --help starts fast
    from clipdesk.cli.models import add_models_parser  # on use: --help starts fast
    from clipdesk.cli.tags import add_tags_parser  # on use: --help starts fast

    add_models_parser(sub)
    add_albums_parser(sub)
    add_duplicates_parser(sub)
    add_tags_parser(sub)

    status = sub.add_parser("status", help="photos, indexed, failures, model and device")
    status.add_argument("--json", action="store_true")

    gui = sub.add_parser("gui", help="open the desktop app (also: clipdesk with no command)")
    gui.add_argument("--search", metavar="TEXT", help="start with this search")
    gui.add_argument(
        "images",
        nargs="*",
        metavar="IMAGE",
        help="start by finding photos that look like this image (as 'Open with clipdesk')",
    )
    gui.add_argument(
        "--screenshot",
        metavar="FILE.png",
        help="wait for indexing (and --search), save a picture of the window and quit",
    )
    _accept_global_options_after_commands(parser)
    return parser


def _accept_global_options_after_commands(parser: argparse.ArgumentParser) -> None:
    """People type ``clipdesk gui --library DIR`` and ``clipdesk index -v``: every command
    takes the global options too. Their default is SUPPRESS, so an option given before the
    command is not overwritten by a command that leaves it out."""
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        for command in action.choices.values():
            taken = command._option_string_actions
            if "--library" not in taken:
                command.add_argument(
                    "--library", metavar="DIR", default=argparse.SUPPRESS, help=argparse.SUPPRESS
                )
            if "-v" not in taken:
                command.add_argument(
                    "-v",
                    "--verbose",
                    action="store_true",
                    default=argparse.SUPPRESS,
                    help=argparse.SUPPRESS,
                )
            _accept_global_options_after_commands(command)


def _no_screen() -> bool:
    """True on Linux without X11/Wayland (e.g. over ssh), unless Qt is told a platform."""
    if not sys.platform.startswith("linux") or os.environ.get("QT_QPA_PLATFORM"):
        return False
    return not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def _run_gui(args: argparse.Namespace) -> int:
    if _no_screen():
        if args.command is None:
            _parser().print_help()
        print(
            "clipdesk: the desktop app needs a screen (no DISPLAY or WAYLAND_DISPLAY is set); "
            "use the commands above, or run it under xvfb-run.",
            file=sys.stderr,
        )
        return 0 if args.command is None else 2
    try:
        from clipdesk.gui.app import run_gui  # Qt: only for the window's check
    except ImportError as exc:
        print(
            f"clipdesk: error: the desktop app cannot start ({exc}). Install PySide6, or use "
            "the commands in `clipdesk --help`.",
            file=sys.stderr,
        )
        return 2
    images = getattr(args, "images", None) or []
    return run_gui(
        args.library,
        getattr(args, "search", None),
        getattr(args, "screenshot", None),
        image=images[0] if images else None,
    )


class ProgressBar:
    """Draws the :class:`Progress` of a service on one status line."""

    def __init__(self, stream: TextIO) -> None:
        self.line = StatusLine(stream)
        self._phase: Phase | None = None

    def update(self, p: Progress) -> None:
        if p.phase != self._phase:
            self.line.end()  # each phase keeps its last line
        self._phase = p.phase
        eta = f", ETA {duration(p.eta_s)}" if p.eta_s is not None and p.done < p.total else ""
        fails = f", {p.failed} failed" if p.failed else ""
        if p.phase == "scan":
            text = f"scanning: {p.done} files"
        elif p.phase in ("prepare", "export") and p.total <= 1:
            text = f"{'encoder' if p.phase == 'prepare' else 'export'}: {p.message}"
        elif p.phase in ("prepare", "export"):  # steps of a measurement or an export
            label = "encoder" if p.phase == "prepare" else "export"
            text = f"{label}: {p.message} {bar(p.fraction)} {p.done}/{p.total}{eta}"
        elif p.phase == "index":
            text = f"index: {p.done} photos searchable"
        else:
            verb = {"embed": "embedding", "tag": "tagging"}.get(p.phase, p.phase)
            rate = f" {p.rate:.1f} photos/s" if p.rate > 0 else ""  # none measured yet
            text = f"{verb} {bar(p.fraction)} {p.done}/{p.total}{rate}{eta}{fails}"
        self.line.show(text, final=p.done == p.total)

    def close(self) -> None:
        self.line.end()


def search_settings(args: argparse.Namespace) -> tuple[bool, Filters]:
    """The cutoff (a date order implies it unless ``--cutoff none``) and the filters
    given as options, checked as if typed in the query."""
    cutoff = args.cutoff == "auto" or (args.cutoff is None and args.sort != "relevance")
    return cutoff, filters_of(args)


def _run_search(app: Clipdesk, args: argparse.Namespace, text: str, like: Sequence[str]) -> None:
    cutoff, filters = search_settings(args)
    result = app.search(text, k=args.k, cutoff=cutoff, sort=args.sort, filters=filters, like=like)
    hits = result.hits
    if args.json:
        print(json.dumps([h.as_json() for h in hits], indent=1))
    elif not hits and result.cutoff is not None:
        print(f"no photo matches ({result.cutoff.reason}; --cutoff none shows the nearest)")
    else:
        if not hits:
            print("no results")
        for hit in hits:
            if result.listed:  # filters only: no score to show, the date instead
                day = time.strftime("%Y-%m-%d", time.localtime(hit.taken_at))
                print(f"{day}  {printable(hit.path)}")
            else:
                print(f"{hit.score:.4f}  {printable(hit.path)}")
    # Photos of an unplugged drive are kept but cannot be shown: say so, or "no results"
    # reads as "nothing matches".
    for folder, reason in app.unavailable_folders():
        print(f"note: not searched: {printable(folder)}: {reason}", file=sys.stderr)


def _run_index(app: Clipdesk, args: argparse.Namespace) -> int:
    from clipdesk.library.scanning import ScanReport  # on use: --help starts fast
    from clipdesk.spec import ModelSpec  # on use: --help starts fast
    from clipdesk.throttle import Throttle  # on use: --help starts fast

    if args.cores is not None and args.cores < 1:
        raise ClipdeskError("--cores needs a number of cores, 1 or more")
    spec = None
    if args.model or args.model_config:
        if args.model_config and not args.model:
            raise ClipdeskError("--model-config needs --model ARCH:PRETRAINED as well")
        spec = ModelSpec.parse(args.model, args.model_config)
    if not app.library.roots():
        raise ClipdeskError("the library has no folders yet: add one with `clipdesk add FOLDER`")
    if args.backend:
        app.set_backend(args.backend)
    remeasure = bool(getattr(args, "remeasure", False))
    if remeasure and (fixed := app.fixed_backend()):
        raise ClipdeskError(
            f"--remeasure: the encoder backend is set to {fixed}, which is not measured; "
            "add --backend auto to measure and choose"
        )
    progress_bar = ProgressBar(sys.stderr)
    report = ScanReport()
    with cancel_on_interrupt("stopping after this batch (Ctrl+C again to abort)...") as cancel:
        try:
            for progress in app.index(
                spec,
                args.device,
                cancel,
                report,
                batch_size=args.batch_size,
                throttle=Throttle(args.cores, args.low_priority),
                remeasure=remeasure,
            ):
                progress_bar.update(progress)
        finally:
            progress_bar.close()
    left_alone = {folder for folder, _ in report.unavailable}
    for folder, reason in report.problems:
        if folder not in left_alone:
            print(
                f"warning: could not read {printable(folder)}: {printable(reason)}",
                file=sys.stderr,
            )
    for folder, reason in report.unavailable:
        print(
            f"warning: {printable(folder)}: {printable(reason)}; its photos, tags and vectors "
            f"are kept (to forget them: clipdesk remove {printable(shlex.quote(folder))})",
            file=sys.stderr,
        )
    for path, reason in report.skipped:
        print(f"warning: skipped {printable(path)}: {reason}", file=sys.stderr)
    status = app.status()
    print(
        f"{plural(report.seen, 'file')} seen ({report.new} new, {report.changed} changed, "
        f"{report.moved} moved, {report.removed} removed); {status.indexed} of "
        f"{plural(status.photos, 'photo')} indexed, {len(status.failed)} failed"
        + (" (see `clipdesk status`)" if status.failed else "")
    )
    print(f"model: {status.model}; device: {status.device}")
    if cancel.cancelled:
        print("stopped early; run `clipdesk index` again to resume", file=sys.stderr)
        return 130
    return 0


def _run_labels(app: Clipdesk, args: argparse.Namespace) -> None:
    if args.labels_command == "create":
        count = app.create_label_set(args.name, args.labels)
        print(f"label set {printable(repr(args.name))}: {plural(count, 'label')}")
    elif args.labels_command == "delete":
        app.delete_label_set(args.name)
        print(f"deleted label set {printable(repr(args.name))} and its tags")
    else:
        sets = app.label_sets()
        if not sets:
            print("no label sets yet: `clipdesk labels create NAME LABEL...`")
        for name, labels in sets.items():
            print(printable(f"{name}: {', '.join(labels)}"))


def _run_tag(app: Clipdesk, args: argparse.Namespace) -> int:
    progress_bar = ProgressBar(sys.stderr)
    with cancel_on_interrupt() as cancel:
        try:
            for progress in app.tag(args.labels, args.folder, args.multi, args.prompts, cancel):
                progress_bar.update(progress)
        finally:
            progress_bar.close()
    results = app.photo_tags(args.labels, args.folder)
    if args.json:
        print(json.dumps([r.as_json() for r in results], indent=1))
        return 0
    counts: dict[str, int] = {}
    for result in results:
        if args.verbose:
            tags = "; ".join(tag.described for tag in result.tags) or "none"
            print(printable(f"{result.path}: {tags}"))
        for tag in result.tags:
            counts[tag.label] = counts.get(tag.label, 0) + 1
    tagged = sum(1 for r in results if r.tags)
    summary = ", ".join(f"{label} {n}" for label, n in sorted(counts.items(), key=lambda t: -t[1]))
    print(
        printable(
            f"{tagged} of {plural(len(results), 'photo')} tagged with {args.labels!r}"
            + (f": {summary}" if summary else "")
        )
    )
    if not args.verbose:
        print("(`-v` lists each photo's tags, `--json` for scripts)", file=sys.stderr)
    return 0


def _run_models(app: Clipdesk, args: argparse.Namespace) -> int:
    from clipdesk.cli.models import run_models_command  # on use: --help starts fast

    if args.models_command == "export":
        return _run_export(app, args)
    if args.models_command != "use":
        return run_models_command(args, app.models)
    from clipdesk.spec import ModelSpec  # on use: --help starts fast

    spec = app.models.spec_for(args.name) or _exported_spec(args.name)
    if spec is None:
        if ":" not in args.name:
            from clipdesk.models.catalog import CATALOG, catalog_entry  # on use: --help starts fast

            if catalog_entry(args.name) is None:  # not a name clipdesk could download
                raise ClipdeskError(
                    f"no model named {args.name!r}: `clipdesk models list` shows the models "
                    f"(catalog: {', '.join(e.name for e in CATALOG)})"
                )
            raise ClipdeskError(
                f"model {args.name!r} is not installed: `clipdesk models download {args.name}` "
                "or `clipdesk models import ...` first (see `clipdesk models list`)"
            )
        spec = ModelSpec.parse(args.name)
    print(app.use_model(spec, args.device))
    if args.no_index:
        return 0
    # Index as a bare `clipdesk index` would, on the device asked for.
    index_args = _parser().parse_args(["index"])
    index_args.device = args.device
    return _run_index(app, index_args)


def _exported_spec(name: str) -> ModelSpec | None:
    """The model of an installed export, by folder name or label (``models list``)."""
    from clipdesk.models.export_files import available_exports  # on use: --help starts fast

    for folder, manifest in available_exports():
        if name in (folder.name, manifest.label, manifest.name):
            return manifest.spec
    return None


def _run_export(app: Clipdesk, args: argparse.Namespace) -> int:
    from clipdesk.models.store import default_models_dir  # on use: --help starts fast
    from clipdesk.spec import ModelSpec  # on use: --help starts fast

    spec = None
    if args.name:
        spec = app.models.spec_for(args.name)
        if spec is None:
            if ":" not in args.name:
                raise ClipdeskError(
                    f"model {args.name!r} is not installed (see `clipdesk models list`)"
                )
            spec = ModelSpec.parse(args.name, args.model_config)
    target = Path(args.to) if args.to else default_models_dir() / "exports"
    folder = app.export_model(
        spec, target, report=lambda line: print(line, file=sys.stderr), replace=args.again
    )
    print(folder)
    return 0


def _print_status(status: object, as_json: bool) -> None:
    from clipdesk.services import LibraryStatus  # on use: --help starts fast

    assert isinstance(status, LibraryStatus)
    if as_json:
        print(json.dumps(status.as_json(), indent=1))
        return
    print(f"library:  {printable(status.library)}")
    print(
        f"photos:   {status.photos} ({status.indexed} indexed, {status.pending} pending, "
        f"{len(status.failed)} failed)"
    )
    print(
        "model:    "
        + (
            status.model
            or "none yet: `clipdesk index` downloads the default model (once, needs network) "
            "and embeds the photos; offline, see `clipdesk models import --help`"
        )
    )
    if status.switching_to:
        print(
            f"switching to {status.switching_to}: {status.switching_done} of "
            f"{status.photos - len(status.failed)} photos embedded (run `clipdesk index`)"
        )
    print(f"device:   {status.device}")
    if status.tags:
        print(printable("tags:     " + ", ".join(f"{k} {v}" for k, v in status.tags.items())))
    if status.folders:
        print("folders:")
        for folder in status.folders:
            missing = "" if folder.available else "  [missing or not mounted]"
            print(f"  {printable(folder.path)}  {folder.indexed}/{folder.photos} indexed{missing}")
            if not folder.available:
                print(
                    "    its photos are kept until it is back; to forget them: "
                    f"clipdesk remove {printable(shlex.quote(folder.path))}"
                )
    if status.failed:
        print("failed:")
        for path, reason in status.failed:
            print(f"  {printable(path)}: {printable(reason)}")


def main(argv: Iterable[str] | None = None) -> int:
    if not faulthandler.is_enabled() and sys.stderr is not None:
        with contextlib.suppress(ValueError, OSError, AttributeError):  # no real stderr
            faulthandler.enable()  # a crash in native code shows where, instead of nothing
    args = _parser().parse_args(list(argv) if argv is not None else None)
    # clipdesk says what went wrong in its own words: other libraries' lines (open_clip's
    # "ERROR root: Failed to download ...", its INFO chatter) only as warnings, with -v;
    # -v shows clipdesk's own progress notes.
    logging.basicConfig(
        level=logging.WARNING if args.verbose else logging.CRITICAL,
        format="%(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("clipdesk").setLevel(logging.INFO if args.verbose else logging.ERROR)
    # Keep undecodable file names printable exactly as the OS gave them.
    if isinstance(sys.stdout, __import__("io").TextIOWrapper):
        sys.stdout.reconfigure(errors="surrogateescape")
    if args.self_test:
        from clipdesk.cli.selftest import run_self_test  # on use: --help starts fast

        return run_self_test()
    if args.command in (None, "gui"):
        return _run_gui(args)
    try:
        from clipdesk.library import Library  # on use: --help starts fast
        from clipdesk.services import Clipdesk  # on use: --help starts fast

        app = Clipdesk(Library(args.library))
        app.cold_scan = args.command in ("search", "similar")  # one query, then exit
        if args.command == "add":
            for message in app.add_folders(args.folders):
                print(printable(message))
            print("run `clipdesk index` to scan and embed the photos")
        elif args.command == "remove":
            removed = app.remove_folder(args.folder)
            print(
                f"removed {printable(args.folder)} from the library "
                f"({plural(removed, 'photo')} forgotten; no file was touched)"
            )
        elif args.command == "index":
            return _run_index(app, args)
        elif args.command == "search":
            _run_search(app, args, args.text, ())
        elif args.command == "similar":
            _run_search(app, args, "", args.path)
        elif args.command == "labels":
            _run_labels(app, args)
        elif args.command == "tag":
            return _run_tag(app, args)
        elif args.command == "models":
            return _run_models(app, args)
        elif args.command == "albums":
            from clipdesk.cli.albums import run_albums_command  # on use: --help starts fast

            return run_albums_command(app, args)
        elif args.command == "duplicates":
            from clipdesk.cli.duplicates import run_duplicates_command  # on use: --help starts fast

            return run_duplicates_command(app, args)
        elif args.command == "tags":
            from clipdesk.cli.tags import run_tags_command  # on use: --help starts fast

            return run_tags_command(app, args)
        elif args.command == "status":
            _print_status(app.status(), args.json)
        return 0
    except ClipdeskError as exc:
        print(f"clipdesk: error: {printable(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("clipdesk: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:  # a full disk, a read-only or vanished library get words
        from clipdesk.library import storage_error

        error = storage_error(exc, args.library)
        if error is None:
            raise  # a bug: keep the traceback
        print(f"clipdesk: error: {printable(error)}", file=sys.stderr)
        return 2
