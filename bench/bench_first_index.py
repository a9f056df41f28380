"""What the first index on a machine costs: the encoder backends are measured once per model
and machine, then remembered.

Indexes the same photos twice, each time into a fresh library with a fresh model in a new
process state: first with no remembered choice (the measurement runs), then with the choice
the first run stored. Prints the time of each phase and the difference, the measurement's
cost on a first index.

    .venv/bin/python bench/bench_first_index.py [--photos 300] [--model ViT-B-32:random]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.pop("CLIPDESK_BACKEND", None)  # measured, as for a user

from bench._common import clothing_photos, print_machine


def _photos(work: Path, count: int) -> Path:
    folder = work / "photos"
    folder.mkdir()
    for i, path in enumerate(clothing_photos(count)):
        shutil.copy(path, folder / f"{i:05d}.jpg")
    return folder


def _index_once(work: Path, folder: Path, spec_text: str, label: str) -> dict[str, float]:
    from clipdesk.library import Library
    from clipdesk.services import Clipdesk
    from clipdesk.spec import ModelSpec

    app = Clipdesk(Library(work / f"library-{label}"))
    app.add_folders([folder])
    spec = ModelSpec.parse(spec_text)
    phases: dict[str, float] = {}
    started = last = time.perf_counter()
    for progress in app.index(spec, "cpu"):
        now = time.perf_counter()
        # the time up to a report was spent on its phase; the model loads before the
        # measurement's first report
        phase = progress.phase
        if phase == "prepare" and progress.done == 0:
            phase = "scan"
        phases[phase] = phases.get(phase, 0.0) + now - last
        last = now
    phases["total"] = time.perf_counter() - started
    status = app.status()
    phases["indexed"] = status.indexed
    print(f"  {label}: {status.device}")
    app.library.close()
    return phases


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=300)
    parser.add_argument("--model", default="ViT-B-32:random")
    args = parser.parse_args()
    print_machine("A first index: the backend measurement's cost")
    work = Path(tempfile.mkdtemp(prefix="clipdesk-first-index-"))
    os.environ["CLIPDESK_MODELS_DIR"] = str(work / "models")  # no remembered choice yet
    try:
        folder = _photos(work, args.photos)
        count = len(list(folder.iterdir()))
        print(f"{count} photos, {args.model}, 2 runs in one process\n")
        import open_clip  # noqa: F401  # imported before either run is timed

        import clipdesk.models.encoder  # noqa: F401

        first = _index_once(work, folder, args.model, "first")
        again = _index_once(work, folder, args.model, "known")
        print()
        print(f"{'phase (s)':34s} {'first index':>12s} {'choice known':>13s}")
        rows = (
            ("scan, model load", "scan"),
            ("backend measurement", "prepare"),
            ("embedding (pipeline)", "embed"),
            ("index save", "index"),
            ("total", "total"),
        )
        for title, key in rows:
            print(f"{title:34s} {first.get(key, 0.0):12.1f} {again.get(key, 0.0):13.1f}")
        print(f"{'photos indexed':34s} {first['indexed']:12.0f} {again['indexed']:13.0f}")
        cost = first["total"] - again["total"]
        print(f"\nthe measurement's cost on a first index: {cost:.1f} s")
        print(f"first index, photos/s over the whole run: {count / first['total']:.1f}")
        print(f"later index, photos/s over the whole run: {count / again['total']:.1f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
