"""Cold starts, as a user meets them: `clipdesk --help`, the app's first window, and the
CLI from start to the first search result (model load included).

    .venv/bin/python bench/bench_startup.py [--repeat 3]

The search library holds the committed test photos indexed with ViT-B-32 (random weights:
the real model's size and load path from a file). The search is timed with torch, then
with the model's export (`clipdesk models export`: no torch imported), then with the
frozen CPU bundle when dist/clipdesk exists (packaging/build.py). Each figure is the best
of --repeat runs, measured from outside the process (fork + exec + imports included).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench._common import REPO, cold_start_env, print_machine


def _timed(cmd: list[str], env: dict[str, str], until: str | None = None) -> float:
    started = time.perf_counter()
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True
    )
    assert proc.stdout is not None
    if until is None:
        proc.communicate()
        return time.perf_counter() - started
    for line in proc.stdout:
        if until in line:
            elapsed = time.perf_counter() - started
            proc.wait()
            return elapsed
    proc.wait()
    raise RuntimeError(f"{cmd} never printed {until!r}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print_machine("Cold starts", torch_threads=False)
    work = Path(tempfile.mkdtemp(prefix="clipdesk-startup-"))
    env = cold_start_env(
        XDG_CONFIG_HOME=str(work / "config"),
        CLIPDESK_MODELS_DIR=str(work / "models"),
        CLIPDESK_BACKEND="torch-fp32",
    )
    cli = [sys.executable, "-m", "clipdesk", "--library", str(work / "library")]
    # A model file on disk, as after a download: ViT-B-32 weights (random values).

    from clipdesk.models.encoder import ClipEncoder
    from clipdesk.spec import ModelSpec

    weights = work / "vit-b-32.safetensors"
    from safetensors.torch import save_file

    model = ClipEncoder(ModelSpec.parse("ViT-B-32:random"), "cpu").model
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    del model
    subprocess.run(
        [*cli, "add", str(REPO / "tests" / "fixtures" / "photos")],
        env=env,
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [*cli, "index", "--model", f"ViT-B-32:{weights}"], env=env, check=True, capture_output=True
    )

    rows = []
    best = min(_timed([*cli, "--help"], env) for _ in range(args.repeat))
    rows.append(("clipdesk --help", best, None))
    gui_env = {
        **env,
        "QT_QPA_PLATFORM": os.environ.get("QT_QPA_PLATFORM", "offscreen"),
        "CLIPDESK_STARTUP_PROBE": "1",
    }
    best = min(_timed([*cli, "gui"], gui_env, "first window shown") for _ in range(args.repeat))
    rows.append(("app: start to first window", best, 1.5))
    best = min(_timed([*cli, "search", "a red dress", "-k", "5"], env) for _ in range(args.repeat))
    rows.append(("CLI search: start to first result (torch)", best, 3.0))
    # `clipdesk models export`: both towers as OpenVINO files; a search then needs no torch.
    subprocess.run([*cli, "models", "export"], env=env, check=True, capture_output=True)
    best = min(_timed([*cli, "search", "a red dress", "-k", "5"], env) for _ in range(args.repeat))
    rows.append(("CLI search: start to first result (export)", best, 3.0))
    bundle = REPO / "dist" / "clipdesk" / "clipdesk"
    if bundle.is_file():  # the frozen CPU bundle (packaging/build.py), same library and export
        frozen = [str(bundle), "--library", str(work / "library")]
        best = min(
            _timed([*frozen, "search", "a red dress", "-k", "5"], env) for _ in range(args.repeat)
        )
        rows.append(("CPU bundle search: start to first result", best, 3.0))
    best = min(
        _timed(
            [
                *cli,
                "similar",
                str(next((REPO / "tests" / "fixtures" / "photos").rglob("*.jpg"))),
                "-k",
                "5",
            ],
            env,
        )
        for _ in range(args.repeat)
    )
    rows.append(("CLI similar (stored vector, no model)", best, None))
    print(f"{'what':44s} {'best s':>7s} {'target':>7s}")
    for what, seconds, target in rows:
        print(f"{what:44s} {seconds:7.2f} {('< ' + str(target)) if target else '':>7s}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
