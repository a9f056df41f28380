"""The text tower: tagging's prompt ensembles and single search queries, with texts read
whole (77 positions, the plain open_clip loop) and trimmed after the longest text
(clipdesk's short text tower), in torch and through the model's export, in one run.

    .venv/bin/python bench/bench_text.py [--model ViT-B-32:random] [--labels 4] [--rounds 2]

"whole" for the export feeds the same export the full context, which costs what an
export made by earlier versions (a fixed-length text tower) costs. Each figure is the best
of --rounds, whole and trimmed interleaved so that a noisy host hits them alike. The vectors of
each trimmed variant are compared with its whole one (min cosine).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np

from bench._common import print_machine

LABELS = ("birthday", "hiking", "receipts", "pets", "wedding", "beach", "snow", "food")
QUERIES = (
    "a dog on a beach at sunset",
    "receipts",
    "my daughter blowing out the candles on her birthday cake",
    "snowy mountain",
    "a red car parked in front of an old stone church in the rain",
    "cat",
)


def _query_ms(encoder: Any) -> float:
    """Median of single-query encodes, every query twice (the second shape is warm)."""
    times = []
    for query in QUERIES * 2:
        started = time.perf_counter()
        encoder.encode_texts([query])
        times.append((time.perf_counter() - started) * 1e3)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ViT-B-32:random")
    parser.add_argument("--labels", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--no-export", action="store_true")
    args = parser.parse_args()
    print_machine("text tower: whole context against trimmed texts")

    from clipdesk.models.encoder import ClipEncoder
    from clipdesk.spec import ModelSpec
    from clipdesk.tagging.zero_shot import label_embeddings, prompt_templates

    templates = prompt_templates("ensemble")
    labels = list(LABELS[: args.labels])
    torch_encoder = ClipEncoder(ModelSpec.parse(args.model), "cpu")
    short = torch_encoder._short_text
    if short is None:
        print(f"{args.model}: its text tower is not causal; texts are always read whole")
        return
    engines: list[tuple[str, Any, Callable[[bool], None]]] = [
        (
            "torch",
            torch_encoder,
            lambda on: setattr(torch_encoder, "_short_text", short if on else None),
        )
    ]
    if not args.no_export:
        from clipdesk.models import exported
        from clipdesk.models.export import export_model

        started = time.perf_counter()
        folder = export_model(torch_encoder, Path(tempfile.mkdtemp(prefix="bench-text-")))
        print(f"export    : {time.perf_counter() - started:.1f} s")
        export_encoder = exported.ExportedEncoder(folder)
        export_encoder.encode_texts(["compile the text tower"])
        if not export_encoder._text_trims:
            print("the export's text tower has a fixed length; measuring torch only")
        else:
            engines.append(
                ("export", export_encoder, lambda on: setattr(export_encoder, "_text_trims", on))
            )
    prompts = len(labels) * len(templates)
    print(f"tagging   : {len(labels)} labels x {len(templates)} templates = {prompts} prompts")
    print()
    print("| engine | texts read | tagging prompts/s | one query, median ms | min cosine |")
    print("|---|---|---:|---:|---:|")
    for name, encoder, trim in engines:
        tagging = {False: float("inf"), True: float("inf")}
        query = dict(tagging)
        vectors: dict[bool, np.ndarray] = {}
        for _round in range(args.rounds):
            for trimmed in (False, True):
                trim(trimmed)
                started = time.perf_counter()
                vectors[trimmed] = label_embeddings(encoder, labels, templates)
                tagging[trimmed] = min(tagging[trimmed], time.perf_counter() - started)
                query[trimmed] = min(query[trimmed], _query_ms(encoder))
        trim(True)
        cosine = float(np.min(np.sum(vectors[False] * vectors[True], axis=1)))
        print(f"| {name} | whole (77) | {prompts / tagging[False]:.1f} | {query[False]:.1f} | |")
        row = f"| {name} | trimmed | {prompts / tagging[True]:.1f} | {query[True]:.1f} |"
        print(f"{row} {cosine:.6f} |")
        print(
            f"| {name} | ratio | {tagging[False] / tagging[True]:.2f}x "
            f"| {query[False] / query[True]:.2f}x | |"
        )


if __name__ == "__main__":
    main()
