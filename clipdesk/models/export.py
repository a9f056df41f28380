"""Export an open_clip model to the torch-free form of :mod:`clipdesk.models.exported`.

Both towers go through ONNX (torch's exporter) into OpenVINO IR. Weights are stored in fp16
when that is measured faithful (the same test as the encoder backends: min cosine >= 0.999
and the same top-10 neighbours for >= 95 % of probe photos), else in fp32; either way they
are computed in f32 (or bf16 where the runtime measures it faithful on the user's machine).
Needs torch: it runs in the full install, or in ``packaging/build.py``.
"""

from __future__ import annotations

import contextlib
import copy
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

import numpy as np

from clipdesk import __version__
from clipdesk.backends import onnx_export
from clipdesk.backends.measuring import (
    FAITHFUL_AGREEMENT,
    FAITHFUL_COSINE,
    cosines,
    probe_images,
    top10_agreement,
)
from clipdesk.backends.onnx_export import visual_onnx_name
from clipdesk.errors import ClipdeskError, ModelUnavailableError
from clipdesk.files import sha256_file
from clipdesk.imaging import ImageRejected, load_rgb
from clipdesk.models.aside import run_aside, spec_fields
from clipdesk.models.encoder import ClipEncoder
from clipdesk.models.export_files import (
    MANIFEST_NAME,
    ExportManifest,
    check_export,
    export_name,
    move_into_place,
)
from clipdesk.models.tokenizer import DEFAULT_VOCAB_NAME, default_vocab_file, trim_tokens
from clipdesk.progress import CancelToken
from clipdesk.spec import ModelSpec

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

    from torch import nn

# Texts to judge the text tower on: CLIP-style prompts over everyday photo subjects.
_SUBJECTS = (
    "dog", "cat", "beach at sunset", "birthday party", "mountain hike", "receipt", "car",
    "city street at night", "wedding", "baby", "plate of food", "snowy forest", "bicycle",
    "portrait of a woman", "group of friends", "old building", "flowers", "boat on a lake",
    "screenshot", "document",
)  # fmt: skip
_TEMPLATES = ("a photo of a {}.", "{}", "a blurry photo of a {}.", "a close-up photo of the {}.")
PROBE_TEXTS = tuple(t.format(s) for s in _SUBJECTS for t in _TEMPLATES)

Report = Callable[[str], None]


def _text_tower(model: Any) -> tuple[nn.Module, bool]:
    """The text tower to export of open_clip's ``model`` (untyped), and whether it takes
    texts trimmed to their longest."""
    import torch  # seconds to import: only once a model is exported

    from clipdesk.backends.towers import short_text_tower  # imports torch and open_clip

    short = short_text_tower(model)
    if short is not None:
        return short.eval(), True

    class TextTower(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            features: torch.Tensor = self.model.encode_text(tokens)
            return features

    return TextTower().eval(), False


def _ir_features(xml: Path, inputs: np.ndarray, batch: int = 64, trim: bool = False) -> np.ndarray:
    """``inputs`` through the IR ``xml`` in batches; ``trim``: each batch cut after its
    longest text, as ``ExportedEncoder`` feeds a text tower of dynamic length."""
    import openvino as ov  # 0.5 s to import: only for an export

    core = ov.Core()
    compiled = core.compile_model(
        core.read_model(str(xml)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"}
    )
    request = compiled.create_infer_request()
    parts = []
    for start in range(0, len(inputs), batch):
        part = inputs[start : start + batch]
        result = request.infer({0: trim_tokens(part) if trim else part})
        parts.append(np.array(next(iter(result.values())), dtype=np.float32))
    return np.concatenate(parts)


def export_model(
    encoder: ClipEncoder,
    exports_dir: Path,
    probe: np.ndarray | None = None,
    texts: Sequence[str] = PROBE_TEXTS,
    allow_fp16: bool = True,
    report: Report | None = None,
    replace: bool = False,
) -> Path:
    """Export ``encoder``'s model into ``exports_dir/<name>``; returns that folder.

    ``probe``: preprocessed photos (N, 3, S, S) to judge fidelity on (the user's own are
    best; photo-like synthetic images otherwise). An existing finished export of the same
    model is kept as it is, unless ``replace``: then the new one takes its place once it is
    complete (an earlier version's export, say).
    """
    import openvino as ov  # 0.5 s and seconds (torch) to import: only for an export
    import torch

    say = report or (lambda _message: None)
    name = export_name(encoder.spec)
    target = exports_dir / name
    if (target / MANIFEST_NAME).is_file() and not replace:
        try:
            check_export(target, ExportManifest.read(target))
            say(f"already exported: {target} (--again replaces it)")
            return target
        except ModelUnavailableError as exc:  # damaged: made again below
            say(str(exc))
    tokenizer_kind = type(encoder.tokenizer).__name__
    if tokenizer_kind != "SimpleTokenizer":
        raise ClipdeskError(
            f"{encoder.spec.arch} uses the {tokenizer_kind} tokenizer; only models with CLIP's "
            "BPE tokenizer can be exported"
        )
    model = encoder.model
    if encoder.device != "cpu" or encoder.precision != "fp32":
        # A private fp32 copy on the CPU: the encoder keeps its GPU / fp16 model intact.
        model = copy.deepcopy(model).float().cpu().eval()
    if probe is None:
        probe = probe_images(encoder.image_size, count=64)
    exports_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".part", dir=exports_dir))
    os.chmod(work, 0o755)  # mkdtemp makes it private; an export is shared like any model

    def export_visual() -> None:
        say("exporting the image tower to ONNX")
        (work / "visual.onnx").unlink(missing_ok=True)  # a stale copy of the measured one
        onnx_export.export_visual_onnx(model, encoder.image_size, work / "visual.onnx")

    try:
        started = time.perf_counter()
        with torch.inference_mode(False):
            measured = exports_dir / visual_onnx_name(encoder.spec.key)
            reused = measured.is_file()
            if reused:
                # The tower the backend measurement exported already (same exporter and
                # settings); the fidelity check below still judges it.
                say("reusing the image tower exported when the backends were measured")
                shutil.copyfile(measured, work / "visual.onnx")
            else:
                export_visual()
            say("exporting the text tower to ONNX")
            text_tower, trims = _text_tower(model)
            tokens = encoder.tokenizer(["a photo", "a dog on a beach"])
            if trims:  # traced shorter than the context, so that the length stays free
                tokens = trim_tokens(tokens)
            dynamic = (0, 1) if trims else (0,)
            onnx_export.write_onnx(text_tower, tokens, "tokens", work / "text.onnx", dynamic)
        with torch.inference_mode():
            want_images = np.concatenate(
                [
                    model.visual(torch.from_numpy(probe[i : i + 64])).float().numpy()
                    for i in range(0, len(probe), 64)
                ]
            )
            text_tokens = encoder.tokenizer(list(texts))
            want_texts = model.encode_text(text_tokens).float().numpy()
        weights: dict[str, str] = {}
        fidelity: dict[str, float] = {}
        for tower, inputs, want in (
            ("visual", probe, want_images),
            ("text", text_tokens.numpy(), want_texts),
        ):
            judged = _judge(work, tower, inputs, want, want_images, allow_fp16, say, trims)
            if judged is None and tower == "visual" and reused:
                # not the tower of these weights after all (a stale file): export afresh
                measured.unlink(missing_ok=True)
                export_visual()
                judged = _judge(work, tower, inputs, want, want_images, allow_fp16, say, trims)
            if judged is None:
                raise ClipdeskError(
                    f"the exported {tower} tower is not faithful to torch; this model cannot "
                    "be exported"
                )
            storage, cosine, agreement = judged
            weights[tower] = storage
            fidelity[f"{tower}_min_cosine"] = round(cosine, 6)
            fidelity[f"{tower}_top10"] = round(agreement, 4)
            (work / f"{tower}.onnx").unlink()
        shutil.copyfile(default_vocab_file(), work / DEFAULT_VOCAB_NAME)
        cfg = _preprocess_cfg(encoder)
        files = {p.name: sha256_file(p) for p in sorted(work.iterdir()) if p.name != MANIFEST_NAME}
        spec = encoder.spec
        manifest = ExportManifest(
            name=name,
            key=spec.key,
            arch=spec.arch,
            pretrained=spec.pretrained,
            config_json=spec.config_json,
            dim=encoder.dim,
            image_size=encoder.image_size,
            context_length=int(text_tokens.shape[1]),
            logit_scale=encoder.logit_scale,
            mean=cfg["mean"],
            std=cfg["std"],
            interpolation=cfg["interpolation"],
            resize_mode=cfg["resize_mode"],
            weights=weights,
            fidelity=fidelity | {"probe_photos": len(probe), "probe_texts": len(texts)},
            files=files,
            vocab=DEFAULT_VOCAB_NAME,
            created_with=f"clipdesk {__version__}, torch {torch.__version__}, "
            f"openvino {ov.get_version().split('-')[0]}",
            extra={
                "seconds": round(time.perf_counter() - started, 1),
                "sizes": {p.name: p.stat().st_size for p in sorted(work.iterdir())},
            },
        )
        manifest.write(work)
        move_into_place(work, target)
        with contextlib.suppress(OSError):
            measured.unlink(missing_ok=True)  # the export holds that tower now (~350 MB)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    say(f"exported to {target}")
    return target


def _export_in_child(
    fields: tuple[str, str, str | None, str | None],
    cache_dir: str | None,
    exports_dir: str,
    probe_paths: list[str],
    steps: Connection | None = None,
) -> None:
    say = steps.send if steps is not None else None  # each step, to the parent's progress
    try:
        encoder = ClipEncoder(ModelSpec(*fields), "cpu", Path(cache_dir) if cache_dir else None)
    except ClipdeskError as exc:
        raise SystemExit(f"clipdesk: cannot export: {exc}") from None
    if say is not None:
        say("reading sample photos")
    rows = []
    for path in probe_paths:
        try:
            rows.append(encoder.preprocess_image(load_rgb(path, encoder.decode_side)))
        except ImageRejected:
            continue
    probe = np.stack(rows) if len(rows) >= 24 else None
    try:
        export_model(encoder, Path(exports_dir), probe=probe, report=say)
    except ClipdeskError as exc:  # one line, not a traceback, in the parent's terminal
        raise SystemExit(f"clipdesk: cannot export: {exc}") from None


def _judge(
    work: Path,
    tower: str,
    inputs: np.ndarray,
    want: np.ndarray,
    want_images: np.ndarray,
    allow_fp16: bool,
    say: Report,
    text_trims: bool,
) -> tuple[str, float, float] | None:
    """Convert ``work/<tower>.onnx`` to IR (fp16 weights first, where faithful) and judge it
    against torch: (weights storage, min cosine, top-10 agreement), or None if unfaithful.
    A text tower of dynamic length is judged on batches of 8 texts, each cut after its
    longest (4 templates of 2 subjects: many lengths, with and without padding)."""
    import openvino as ov  # 0.5 s to import: only for an export

    converted = ov.convert_model(str(work / f"{tower}.onnx"))
    for storage in ("fp16", "fp32") if allow_fp16 else ("fp32",):
        xml = work / f"{tower}.xml"
        ov.save_model(converted, str(xml), compress_to_fp16=storage == "fp16")
        if tower == "text" and text_trims:
            got = _ir_features(xml, inputs, batch=8, trim=True)
        else:
            got = _ir_features(xml, inputs)
        cosine = float(np.min(cosines(want, got)))
        agreement = (
            top10_agreement(want, got)
            if tower == "visual"
            else _text_agreement(want_images, want, got)
        )
        say(
            f"{tower} tower, {storage} weights: min cosine {cosine:.5f}, "
            f"top-10 agreement {agreement:.1%}"
        )
        if cosine >= FAITHFUL_COSINE and agreement >= FAITHFUL_AGREEMENT:
            return storage, cosine, agreement
    return None


def export_model_aside(
    spec: ModelSpec,
    cache_dir: Path | None,
    exports_dir: Path,
    probe_paths: list[str],
    cancel: CancelToken | None = None,
    steps: Connection | None = None,
) -> None:
    """:func:`export_model` in a child process (:mod:`clipdesk.models.aside`); ``cancel`` kills
    it at once (closing the app must not wait a minute). ``steps``: the sending end of a
    pipe, sent a line per step (clipdesk.indexing.exporting.export_once shows them)."""
    cache = str(cache_dir) if cache_dir else None
    args = (spec_fields(spec), cache, str(exports_dir), probe_paths, steps)
    code = run_aside(_export_in_child, args, cancel)
    if code is None:
        for leftover in exports_dir.glob(".*.part"):  # the killed child's half export
            shutil.rmtree(leftover, ignore_errors=True)
        raise ClipdeskError("the export was cancelled")
    if code != 0:
        raise ClipdeskError(f"the export process failed (exit {code})")


def _text_agreement(images: np.ndarray, want: np.ndarray, got: np.ndarray, k: int = 10) -> float:
    """Share of text queries whose top-k probe photos are the same with either text tower."""
    images = images / np.linalg.norm(images, axis=1, keepdims=True)
    k = min(k, len(images) - 1)
    same = 0
    for ref, new in zip(want, got, strict=True):
        ref_top = set(np.argsort(-(images @ ref))[:k].tolist())
        new_top = set(np.argsort(-(images @ new))[:k].tolist())
        same += ref_top == new_top
    return same / len(want)


class _PreprocessCfg(TypedDict):
    mean: list[float]
    std: list[float]
    interpolation: str
    resize_mode: str


def _preprocess_cfg(encoder: ClipEncoder) -> _PreprocessCfg:
    import open_clip  # seconds to import (torch): only once a model is exported

    cfg = open_clip.get_model_preprocess_cfg(encoder.model)
    return _PreprocessCfg(
        mean=[float(v) for v in cfg.get("mean", open_clip.OPENAI_DATASET_MEAN)],
        std=[float(v) for v in cfg.get("std", open_clip.OPENAI_DATASET_STD)],
        interpolation=cfg.get("interpolation") or "bicubic",
        resize_mode=cfg.get("resize_mode") or "shortest",
    )
