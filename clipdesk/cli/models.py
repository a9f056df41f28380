"""``clipdesk models``: list, download and import models (parsing, bars and output only).

The work is done by :class:`clipdesk.models.store.ModelStore`; this module draws and prints.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from clipdesk.cli.output import StatusLine, bar, cancel_on_interrupt, duration, human_size
from clipdesk.errors import ClipdeskError
from clipdesk.models.catalog import APPLE_AMLR, REFERENCE_NAME, speeds_cpu  # plain data

if TYPE_CHECKING:
    from clipdesk.models.store import ModelInfo, ModelStore


def add_models_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    models = sub.add_parser(
        "models",
        help="list, download and import CLIP models",
        description="Models live in clipdesk's models folder ($CLIPDESK_MODELS_DIR, or the "
        "user data folder). Downloads use the Hugging Face hub, or $HF_ENDPOINT (a mirror).",
    )
    msub = models.add_subparsers(dest="models_command", metavar="SUBCOMMAND", required=True)

    listing = msub.add_parser("list", help="the catalog and imported models, and what is installed")
    listing.add_argument("--json", action="store_true", help="print JSON")

    download = msub.add_parser(
        "download",
        help="download a catalog model (resumes a partial download; checks its sha256)",
    )
    download.add_argument("name", metavar="NAME", help="a name from `clipdesk models list`")
    download.add_argument(
        "--mirror", metavar="URL", help="a Hugging Face mirror to download from (or $HF_ENDPOINT)"
    )
    download.add_argument(
        "--accept-license",
        action="store_true",
        help="acknowledge a research-only license (`clipdesk models list` shows each "
        "model's): such weights are downloaded only with this flag",
    )

    imp = msub.add_parser(
        "import",
        help="register a local weights file (copied into the models folder)",
        description="Register a local open_clip checkpoint: a .safetensors file, or a torch "
        "state dict (.pt/.pth/.bin) that loads with weights_only=True; a pickle that needs "
        "code to load is refused. The file is copied; the original is only read.",
    )
    imp.add_argument("--name", help="the name to use it by (letters, digits, ._-)")
    imp.add_argument("--weights", metavar="FILE", help="the weights file")
    imp.add_argument(
        "--export",
        metavar="FOLDER",
        help="instead of weights: an exported model folder (from `clipdesk models export`), "
        "which runs without torch",
    )
    imp.add_argument(
        "--config",
        metavar="FILE.json",
        help="a custom architecture (open_clip's model-config schema); its architecture name "
        "is the file's stem unless --arch is given",
    )
    imp.add_argument(
        "--arch",
        metavar="ARCH",
        help="the architecture: an open_clip model name such as ViT-B-32 (needed without "
        "--config), or the name for the --config architecture",
    )

    export = msub.add_parser(
        "export",
        help="export a model to run without torch (OpenVINO; both towers, fp16 where faithful)",
        description="Writes the image and text towers as OpenVINO files into the models "
        "folder's exports/, checked against torch on up to 256 of the library's photos. "
        "Searches then start without loading torch, and the CPU bundle can use the model.",
    )
    export.add_argument(
        "name",
        nargs="?",
        metavar="NAME",
        help="an installed model or ARCH:PRETRAINED (default: the library's model)",
    )
    export.add_argument("--model-config", metavar="FILE.json", help="a custom architecture")
    export.add_argument("--to", metavar="DIR", help="write the export under DIR instead")
    export.add_argument(
        "--again",
        action="store_true",
        help="replace an existing export of this model (one made by an earlier version "
        "runs, but its text tower is slower)",
    )

    use = msub.add_parser("use", help="make an installed model the library's model")
    use.add_argument("name", metavar="NAME", help="a name from `clipdesk models list`")
    use.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default=None)
    use.add_argument("--no-index", action="store_true", help="only switch; embed the photos later")


def run_models_command(args: argparse.Namespace, store: ModelStore) -> int:
    """Run ``models list|download|import`` (``use`` belongs to the library's CLI) on the
    app's models folder ``store``."""
    from clipdesk.models.store import ModelStore  # on use: --help starts fast

    command = args.models_command
    from clipdesk.models.export_files import torch_available  # on use: --help starts fast

    if not torch_available() and (
        command == "download" or (command == "import" and not args.export)
    ):
        raise ClipdeskError(
            "this is the CPU version of clipdesk: it runs exported models only (see `clipdesk "
            "models list`); download or import weights with the full version, export them "
            "there with `clipdesk models export`, then `clipdesk models import --export FOLDER`"
        )
    if command == "list":
        _print_list(store.available(), args.json, sys.stdout)
        return 0
    if command == "download":
        mirror = ModelStore(store.models_dir, endpoint=args.mirror) if args.mirror else store
        return _download(mirror, args.name, args.accept_license)
    if command == "import" and args.export:
        from clipdesk.models.export_files import (  # on use: --help starts fast
            ExportManifest,
            install_export,
        )

        folder = install_export(Path(args.export))
        manifest = ExportManifest.read(folder)
        print(f"imported the export of {manifest.label} into {folder}")
        return 0
    if command == "import":
        if not args.name or not args.weights:
            raise ClipdeskError("models import needs --name and --weights (or --export FOLDER)")
        spec = store.import_model(
            args.name,
            Path(args.weights),
            Path(args.config) if args.config else None,
            arch=args.arch,
        )
        print(f"imported {args.name} ({spec.arch}, key {spec.key})")
        print(f"use it with `clipdesk models use {args.name}`")
        return 0
    raise ClipdeskError(f"unknown models command {command!r}")


def _print_list(rows: list[ModelInfo], as_json: bool, out: TextIO) -> None:
    from clipdesk.models.export_files import (  # on use: --help starts fast
        available_exports,
        torch_available,
    )

    exports = available_exports()
    exported_keys = {manifest.key for _folder, manifest in exports}
    full = torch_available()
    if as_json:
        listed: list[dict[str, object]] = []
        for info in rows:
            entry = info.as_json()
            entry["exported"] = info.key in exported_keys
            entry["runs_here"] = full or info.key in exported_keys
            listed.append(entry)
        for folder, manifest in exports:
            listed.append(
                {
                    "name": manifest.name,
                    "kind": "exported",
                    "spec": manifest.label,
                    "key": manifest.key,
                    "dim": manifest.dim,
                    "installed": True,
                    "path": str(folder),
                    "weights": manifest.weights,
                    "runs_here": True,
                }
            )
        out.write(json.dumps(listed, indent=1) + "\n")
        return
    out.write(
        f"  {'NAME':<18} {'SIZE':>8} {'DIM':>4} {'IMAGENET':>8} {'SPEED':>5}  "
        f"{'LICENSE':<24} LANGUAGES\n"
    )
    for info in rows:
        mark = "*" if info.installed else " "
        size = human_size(info.size_bytes) if info.size_bytes else "?"
        top1 = f"{info.imagenet_top1:.1%}" if info.imagenet_top1 is not None else "-"
        speed = f"{info.relative_speed:.2f}x" if info.relative_speed is not None else "-"
        dim = str(info.dim) if info.dim else "?"
        notes = [info.spec]
        if info.default:
            notes.append("default")
        if info.research_only:
            notes.append("research only: download with --accept-license")
        if info.requires:
            notes.append(f"needs {', '.join(info.requires)}: pip install 'clipdesk[multilingual]'")
        if info.key in exported_keys:
            notes.append("exported")
        elif not full:
            notes.append("needs the full (torch) version of clipdesk")
        license_name = _short_license(info.license) if info.kind == "catalog" else "(its own)"
        out.write(
            f"{mark} {info.name:<18} {size:>8} {dim:>4} {top1:>8} {speed:>5}  "
            f"{license_name:<24} {info.languages}  ({'; '.join(notes)})\n"
        )
    cpu = speeds_cpu()
    out.write(
        f"* installed. SPEED: photos/s of the image tower against {REFERENCE_NAME}'s, "
        + (f"measured on {cpu} (torch fp32)" if cpu else "not measured")
        + ". IMAGENET: published zero-shot top-1.\n"
    )
    licensed = [i for i in rows if i.kind == "catalog" and i.license_url]
    if licensed:
        out.write("licenses (each model card or license text):\n")
        for info in licensed:
            out.write(f"  {info.name:<18} {info.license}: {info.license_url}\n")
    if exports:
        out.write("\nexported models (run without torch):\n")
        for folder, manifest in exports:
            weights = "/".join(sorted(set(manifest.weights.values())))
            out.write(f"* {manifest.label}  dim {manifest.dim}, {weights} weights  ({folder})\n")


def _short_license(name: str) -> str:
    """A license name that fits the table's column (the full one is listed below it)."""
    return "Apple AMLR (research)" if name == APPLE_AMLR else (name or "?")


def _download(store: object, name: str, accept_license: bool = False) -> int:
    from clipdesk.models.hub import DownloadCancelled  # on use: --help starts fast
    from clipdesk.models.store import ModelStore  # on use: --help starts fast

    assert isinstance(store, ModelStore)
    progress = ByteBar(sys.stderr, name)
    with cancel_on_interrupt() as cancel:
        try:
            spec = store.download(name, progress.update, cancel, accept_license=accept_license)
        except DownloadCancelled as exc:
            progress.close()
            print(f"clipdesk: {exc}", file=sys.stderr)
            return 130
        finally:
            progress.close()
    print(f"{name} is installed: {spec.pretrained}")
    return 0


class ByteBar:
    """A download's bytes, rate and ETA on one status line."""

    def __init__(self, stream: TextIO, label: str) -> None:
        self.line = StatusLine(stream)
        self.label = label
        self.started = time.monotonic()
        self.first: int | None = None

    def update(self, done: int, total: int) -> None:
        now = time.monotonic()
        if self.first is None:  # a resumed download counts its rate from where it resumed
            self.first, self.started = done, now
        rate = (done - self.first) / max(now - self.started, 1e-6)
        eta = f", ETA {duration((total - done) / rate)}" if rate > 0 and done < total else ""
        fraction = done / total if total else 1.0
        self.line.show(
            f"{self.label} {bar(fraction)} {human_size(done)}/{human_size(total)}"
            f" {human_size(int(rate))}/s{eta}",
            final=done == total,
        )

    def close(self) -> None:
        self.line.end()
