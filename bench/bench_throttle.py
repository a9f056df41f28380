"""What throttled indexing leaves for the rest of the computer.

A foreground program (a separate process doing single-threaded numpy work, like a busy
app) reports its speed while clipdesk indexes photos with ViT-B-32 (random weights, fp32):
without limits, with at most 1 core, at low priority, and both. The figure is the
foreground's speed relative to an idle machine, beside the indexing rate.

    .venv/bin/python bench/bench_throttle.py [--photos 300]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ["CLIPDESK_BACKEND"] = "torch-fp32"  # the same encoder in every scenario

from bench._common import clothing_photos, print_machine

FOREGROUND = """
import os, sys, time
os.environ["OMP_NUM_THREADS"] = "1"
import numpy as np
a = np.random.default_rng(0).random((160, 160))
end = time.monotonic() + float(sys.argv[1])
while time.monotonic() < end:
    t0, n = time.monotonic(), 0
    while time.monotonic() - t0 < 0.5:
        a = (a @ a) / np.linalg.norm(a)
        n += 1
    print(n / (time.monotonic() - t0), flush=True)
"""


def _foreground(seconds: float) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    return subprocess.Popen(
        [sys.executable, "-c", FOREGROUND, str(seconds)], stdout=subprocess.PIPE, text=True, env=env
    )


def _rates(proc: subprocess.Popen[str]) -> list[float]:
    out, _ = proc.communicate()
    return [float(line) for line in out.split()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=300)
    args = parser.parse_args()
    print_machine("Throttled indexing vs a foreground program")
    from clipdesk.library import Library
    from clipdesk.services import Clipdesk
    from clipdesk.spec import ModelSpec
    from clipdesk.throttle import Throttle

    work = Path(tempfile.mkdtemp(prefix="clipdesk-throttle-"))
    folder = work / "photos"
    folder.mkdir()
    for i, path in enumerate(clothing_photos(args.photos)):
        shutil.copy(path, folder / f"{i:05d}.jpg")
    count = len(list(folder.iterdir()))
    spec = ModelSpec.parse("ViT-B-32:random")

    base = _rates(_foreground(8))
    idle = sum(base[2:]) / max(len(base[2:]), 1)
    print(f"foreground alone: {idle:.1f} steps/s\n")
    print(f"{'indexing':28s} {'photos/s':>9s} {'foreground':>11s}")
    shared = None
    for label, throttle in (
        ("all cores, normal priority", Throttle()),
        ("at most 1 core", Throttle(1)),
        ("all cores, low priority", Throttle(None, True)),
        ("1 core, low priority", Throttle(1, True)),
    ):
        app = Clipdesk(Library(work / f"library-{len(label)}-{time.time_ns()}"))
        if shared is not None:
            app.preload(shared)  # load once: the figure is about indexing
        app.add_folders([folder])
        result: dict[str, float] = {}

        def run(
            app: Clipdesk = app, throttle: Throttle = throttle, result: dict[str, float] = result
        ) -> None:
            started = time.perf_counter()
            list(app.index(spec, "cpu", throttle=throttle))
            result["rate"] = count / (time.perf_counter() - started)

        if shared is None:
            shared = app.encoder(spec, "cpu")
        fg = _foreground(600)  # stopped when the indexing ends
        time.sleep(1.0)
        worker = threading.Thread(target=run)
        worker.start()
        worker.join()
        fg.terminate()
        rates = _rates(fg)[2:]
        share = (sum(rates) / len(rates) / idle) if rates else float("nan")
        print(f"{label:28s} {result['rate']:9.1f} {share:10.0%}")
        app.library.close()
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
