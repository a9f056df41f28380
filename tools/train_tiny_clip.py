#!/usr/bin/env python
"""Train clipdesk's small test CLIP (``clothing-clip``) on the clothing-small train split.

The model is an ordinary open_clip architecture of our own (a JSON model config: a small
ModifiedResNet image tower and a small text transformer with open_clip's default tokenizer,
vocabulary 49408), trained from scratch on the CPU with CLIP's symmetric contrastive
(InfoNCE) loss and a learnable temperature (``logit_scale``, initialised to log(1/0.07) and
clamped at log(100), as in the CLIP paper). Captions are made from the class name and a
template drawn at random per photo and epoch: TRAIN_TEMPLATES (our own, some about clothing)
plus every prompt of clipdesk's ensemble, i.e. open_clip's 80 ImageNet templates and
clipdesk's personal-photo ones (``--captions own+ensemble``, the default), so that training
captions resemble the prompts the product tags with. (With our templates alone, ``--captions
own``, test accuracy came out about the same; with ours + ImageNet only, the one personal
prompt never seen in training, "a close-up photo of {}.", embedded off the others.) Each
template is also used without its final full stop, as people type search queries: trained
on full stops only, the query "a photo of a pants" found no pants at all.

Duplicate captions: with 10 classes a batch of B photos holds about B/10 photos of each
class, and their captions say the same thing (often word for word). Plain InfoNCE would
count all but one of them as negatives and push apart embeddings that ought to agree. We
treat every same-class (photo, caption) pair of the batch as a positive: each row of the
logit matrix gets a target spread evenly over its same-class columns (multi-positive
InfoNCE, symmetric over photo->caption and caption->photo). Sampling one photo per class
per batch would avoid the duplicates too, but caps the batch at 10 pairs (few negatives,
many slow small steps on a CPU) and would show the 112 skirts as often as the 795 t-shirts.

Speed: every photo is decoded once (clipdesk's own loader, JPEG draft mode) and cached in
memory through open_clip's eval transform at 1.25x the input size; training crops from that
cache (random resized crop, horizontal flip), so an epoch needs no decoding at all.

At the end the weights are saved (float16 safetensors, the temperature in float32; open_clip
loads them into its float32 model), loaded again through clipdesk's ClipEncoder, and the
held-out zero-shot accuracy on the TEST split is measured the way the product tags:
clipdesk.tagging.zero_shot.prompt_templates("single") (one prompt, "a photo of a {}.") against
prompt_templates("ensemble") (open_clip's 80 ImageNet templates + clipdesk's personal
ones; each prompt embedding normalised, averaged, re-normalised). The ensemble of all our
training templates (+ the ImageNet ones) is reported too, and so is the accuracy of
clipdesk's single-label tagging, where a neutral background class may also win ("none").

Usage (from the repository root; about 5 minutes on 2 CPU cores):

    .venv/bin/python tools/train_tiny_clip.py
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import random
import shlex
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

NAME = "clothing-clip"

# Captions for training. Generic photo phrasings in the style of the CLIP prompt ensemble
# plus some that say what a product photo of clothing is.
TRAIN_TEMPLATES = (
    "a photo of a {}.",
    "a {}.",
    "{}",
    "a picture of a {}, a type of clothing.",
    "a photo of the {}.",
    "a photo of my {}.",
    "a close-up photo of a {}.",
    "a good photo of a {}.",
    "a bright photo of the {}.",
    "a cropped photo of a {}.",
    "a product photo of a {}.",
    "a {} for sale.",
    "a photo of a {}, a piece of clothing.",
    "a picture of the {}.",
    "an image of a {}.",
    "a snapshot of a {}.",
    "a phone photo of a {}.",
    "a photo showing a {}.",
    "this is a {}.",
    "a {} on a plain background.",
)


def caption_templates(kind: str) -> tuple[str, ...]:
    """``own`` (TRAIN_TEMPLATES), ``own+ensemble`` (+ clipdesk's prompt ensemble) or
    ``own+imagenet`` (+ open_clip's 80 ImageNet templates)."""
    from clipdesk.tagging.zero_shot import prompt_templates

    if kind == "own":
        return TRAIN_TEMPLATES
    if kind == "own+ensemble":
        return tuple(dict.fromkeys(TRAIN_TEMPLATES + prompt_templates("ensemble")))
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    imagenet = tuple(template("{}") for template in OPENAI_IMAGENET_TEMPLATES)
    return tuple(dict.fromkeys(TRAIN_TEMPLATES + imagenet))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=REPO.parent / "shared/data/clothing-small")
    p.add_argument("--out", type=Path, default=REPO / "tests/fixtures")
    p.add_argument("--name", default=NAME, help="model name = the config file's stem")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--warmup-epochs", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--min-crop", type=float, default=0.8, help="smallest random crop (area)")
    p.add_argument("--image-size", type=int, default=64, help="a multiple of 32")
    p.add_argument("--vision-width", type=int, default=16, help="ModifiedResNet stem width")
    p.add_argument("--vision-layers", default="1,1,1,1", help="blocks per ResNet stage")
    p.add_argument("--text-width", type=int, default=32)
    p.add_argument("--text-layers", type=int, default=2)
    p.add_argument("--text-heads", type=int, default=2)
    p.add_argument("--embed-dim", type=int, default=64)
    p.add_argument("--context-length", type=int, default=32)
    p.add_argument(
        "--captions",
        choices=("own", "own+imagenet", "own+ensemble"),
        default="own+ensemble",
        help="caption templates (see caption_templates)",
    )
    p.add_argument(
        "--keep-full-stops",
        action="store_true",
        help="do not also train on each template without its final full stop",
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--save-dtype", choices=("fp16", "fp32"), default="fp16")
    p.add_argument(
        "--eval-every", type=int, default=0, help="validation accuracy every N epochs (0: off)"
    )
    p.add_argument("--limit", type=int, default=0, help="use only N training photos (smoke tests)")
    return p.parse_args(argv)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def read_split(data: Path, split: str) -> list[tuple[Path, str]]:
    with open(data / "labels.csv", newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r["split"] == split]
    return [(data / r["path"], r["label"]) for r in rows]


def model_config(args: argparse.Namespace) -> dict[str, object]:
    return {
        "embed_dim": args.embed_dim,
        "vision_cfg": {
            "image_size": args.image_size,
            "layers": [int(n) for n in args.vision_layers.split(",")],
            "width": args.vision_width,
            "head_width": 64,
        },
        "text_cfg": {
            "context_length": args.context_length,
            "vocab_size": 49408,
            "width": args.text_width,
            "heads": args.text_heads,
            "layers": args.text_layers,
        },
    }


def decode_all(paths: Sequence[Path], side: int, threads: int) -> torch.Tensor:
    """(N, 3, side, side) float tensors, through clipdesk's loader and open_clip's eval path."""
    import open_clip

    from clipdesk.imaging import load_rgb

    transform = open_clip.image_transform(side, is_train=False)

    def one(path: Path) -> torch.Tensor:
        # Decoded at no less than twice the side, as clipdesk does (JPEG draft scaling is a
        # cruder filter than the antialiased resize that follows).
        tensor: torch.Tensor = transform(load_rgb(str(path), 2 * side))
        return tensor

    with ThreadPoolExecutor(max(1, threads)) as pool:
        return torch.stack(list(pool.map(one, paths)))


def augment(batch: torch.Tensor, size: int, gen: torch.Generator, min_crop: float) -> torch.Tensor:
    """Light train-time augmentation: random resized crop (area min_crop-1), horizontal flip."""
    from torchvision.transforms.v2 import functional as TF

    side = batch.shape[-1]
    out = []
    for image in batch:
        area = side * side * (min_crop + (1 - min_crop) * torch.rand(1, generator=gen).item())
        log_ratio = (torch.rand(1, generator=gen).item() - 0.5) * 2 * math.log(4 / 3)
        ratio = math.exp(log_ratio)
        w = min(side, round(math.sqrt(area * ratio)))
        h = min(side, round(math.sqrt(area / ratio)))
        top = int(torch.randint(0, side - h + 1, (1,), generator=gen))
        left = int(torch.randint(0, side - w + 1, (1,), generator=gen))
        crop = TF.resized_crop(image, top, left, h, w, [size, size], antialias=True)
        if torch.rand(1, generator=gen).item() < 0.5:
            crop = crop.flip(-1)
        out.append(crop)
    return torch.stack(out)


def contrastive_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    labels: torch.Tensor,
    logit_scale: torch.Tensor,
) -> torch.Tensor:
    """Symmetric multi-positive InfoNCE: same-class pairs of the batch are all positives."""
    logits = logit_scale * image_features @ text_features.T
    positives = (labels[:, None] == labels[None, :]).float()
    targets = positives / positives.sum(dim=1, keepdim=True)  # symmetric mask: both ways
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, object]]:
    """CLIP-style: weight decay on weights, none on gains, biases and the temperature."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.ndim < 2 or "logit_scale" in name or ".bn" in name or ".ln" in name:
            no_decay.append(param)
        else:
            decay.append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


@torch.no_grad()
def zero_shot_accuracy(
    model: torch.nn.Module,
    tokenizer: object,
    images: torch.Tensor,
    labels: torch.Tensor,
    classes: Sequence[str],
    templates: Sequence[str],
) -> float:
    """Top-1 over ``classes`` for pre-processed ``images`` (the in-training model)."""
    was_training = model.training
    model.eval()
    rows = []
    for name in classes:
        tokens = tokenizer([t.format(name) for t in templates])  # type: ignore[operator]
        emb = F.normalize(model.encode_text(tokens), dim=-1).mean(0)
        rows.append(F.normalize(emb, dim=-1))
    feats = torch.cat([model.encode_image(chunk, normalize=True) for chunk in images.split(256)])
    pred = (feats @ torch.stack(rows).T).argmax(1)
    model.train(was_training)
    return float((pred == labels).float().mean())


def full_decode(paths: Sequence[Path], side: int) -> torch.Tensor:
    """Full-size decode (no draft) and open_clip's eval transform, no clipdesk code at all."""
    import open_clip
    from PIL import Image, ImageOps

    transform = open_clip.image_transform(side, is_train=False)
    tensors = []
    for path in paths:
        with Image.open(path) as image:
            tensors.append(transform(ImageOps.exif_transpose(image).convert("RGB")))
    return torch.stack(tensors)


def save_weights(model: torch.nn.Module, path: Path, dtype: str) -> None:
    from safetensors.torch import save_file

    state = {}
    for key, value in model.state_dict().items():
        tensor = value.detach().cpu()
        # The temperature stays float32, so the saved model has exactly the learned one.
        if dtype == "fp16" and tensor.is_floating_point() and key != "logit_scale":
            tensor = tensor.half()
        state[key] = tensor.contiguous()
    save_file(state, str(path), metadata={"format": "pt"})
    path.chmod(0o644)


def evaluate_saved(
    name: str,
    weights: Path,
    config: Path,
    test: Sequence[tuple[Path, str]],
    train_templates: Sequence[str],
) -> dict[str, object]:
    """Test-split accuracy of the saved files, loaded and run exactly as clipdesk does."""
    from clipdesk.imaging import load_rgb
    from clipdesk.models.encoder import ClipEncoder
    from clipdesk.spec import ModelSpec
    from clipdesk.tagging.zero_shot import (
        Classifier,
        background_embedding,
        label_embeddings,
        prompt_templates,
    )

    encoder = ClipEncoder(ModelSpec.parse(f"{name}:{weights}", config), "cpu")
    classes = sorted({label for _, label in test})
    truth = np.array([classes.index(label) for _, label in test])
    side = getattr(encoder, "decode_side", encoder.image_size)  # what clipdesk decodes at
    vectors = np.concatenate(
        [
            encoder.encode_images([load_rgb(str(p), side) for p, _ in test[i : i + 64]])
            for i in range(0, len(test), 64)
        ]
    )
    prompt_sets = {
        "single": prompt_templates("single"),
        "ensemble": prompt_templates("ensemble"),
        "train": tuple(dict.fromkeys(tuple(train_templates) + caption_templates("own+imagenet"))),
    }
    background = background_embedding(encoder)
    result: dict[str, object] = {
        "classes": classes,
        "counts": [int((truth == c).sum()) for c in range(len(classes))],
        "logit_scale": encoder.logit_scale,
        "n": len(test),
        "prompts": {k: len(v) for k, v in prompt_sets.items()},
    }
    for key, templates in prompt_sets.items():
        label_vectors = label_embeddings(encoder, classes, templates)
        pred = (vectors @ label_vectors.T).argmax(1)
        result[f"acc_{key}"] = float((pred == truth).mean())
        result[f"per_class_{key}"] = [
            float((pred[truth == c] == c).mean()) for c in range(len(classes))
        ]
        # clipdesk's single-label tagging: a neutral background class may win ("none").
        decisions = Classifier(tuple(classes), label_vectors, background, encoder.logit_scale)
        tags = decisions.single(vectors)
        result[f"tag_{key}"] = float(
            np.mean([bool(t) and t[0][0] == y for t, y in zip(tags, truth, strict=True)])
        )
        result[f"none_{key}"] = float(np.mean([not t for t in tags]))
    single_rows = encoder.encode_texts([prompt_sets["single"][0].format(c) for c in classes])
    cosines = np.concatenate(
        [
            encoder.encode_texts([t.format(c) for t in prompt_sets["ensemble"]]) @ row
            for c, row in zip(classes, single_rows, strict=True)
        ]
    )
    result["template_cos_mean"] = float(cosines.mean())
    result["template_cos_min"] = float(cosines.min())
    # Text search as the e2e tests query it: precision@5 of "a photo of a {label}".
    queries = encoder.encode_texts([f"a photo of a {c}" for c in classes])
    top5 = np.argsort(-(vectors @ queries.T), axis=0)[:5]
    result["precision_at_5"] = [float((truth[top5[:, c]] == c).mean()) for c in range(len(classes))]
    return result


def write_note(path: Path, info: dict[str, object], res: dict[str, object]) -> None:
    classes: list[str] = res["classes"]  # type: ignore[assignment]
    counts: list[int] = res["counts"]  # type: ignore[assignment]
    single: list[float] = res["per_class_single"]  # type: ignore[assignment]
    ens: list[float] = res["per_class_ensemble"]  # type: ignore[assignment]
    p5: list[float] = res["precision_at_5"]  # type: ignore[assignment]
    prompts: dict[str, int] = res["prompts"]  # type: ignore[assignment]
    table = "\n".join(
        f"| {c} | {n} | {s:.1%} | {e:.1%} | {p:.1f} |"
        for c, n, s, e, p in zip(classes, counts, single, ens, p5, strict=True)
    )
    gain = float(res["acc_ensemble"]) - float(res["acc_single"])  # type: ignore[arg-type]
    if abs(gain) < 0.5 / int(res["n"]):  # type: ignore[call-overload]
        verdict = "The ensemble gives exactly the top-1 of the single prompt."
    else:
        verdict = f"The ensemble changes top-1 by {100 * gain:+.1f} points."
    text = f"""# {info["name"]}: a small CLIP trained from scratch for clipdesk's tests

Made by `tools/train_tiny_clip.py` (its docstring explains the method), from the repository
root:

    {info["command"]}

- Data: the `train` split of clothing-small ({info["n_train"]} product photos, 10 classes).
  Evaluated on the held-out `test` split ({res["n"]} photos, never seen in training).
  Settings were chosen on the `validation` split (test figures were printed in the
  development runs too).
- Seed {info["seed"]} (torch, numpy, random); CPU only, {info["threads"]} threads; the run is
  deterministic on a given machine and thread count.
- Architecture (`{info["name"]}.json`, an open_clip model config):
  - image tower: ModifiedResNet, layers [{info["vision_layers"]}], width \
{info["vision_width"]}, {info["image_size"]} px input;
  - text tower: transformer width {info["text_width"]}, {info["text_layers"]} layers, \
{info["text_heads"]} heads, context {info["context_length"]}, open_clip's default tokenizer
    (vocabulary 49408);
  - joint embedding {info["embed_dim"]}; {info["params"]:,} parameters \
({info["params_visual"]:,} image tower, {info["params_token"]:,} token embedding).
- Training: {info["epochs"]} epochs, batch {info["batch_size"]}, AdamW (lr {info["lr"]}, \
betas 0.9/0.98, weight decay {info["weight_decay"]}),
  one epoch of warmup, then cosine. Symmetric contrastive (InfoNCE) loss, same-class pairs
  of a batch counted as positives; learnable temperature, learned `logit_scale.exp()` =
  {res["logit_scale"]:.2f}. Captions: the class name in one of {info["n_templates"]} \
templates ({info["captions"]}),
  drawn at random. Augmentation: random resized crop (area {info["min_crop"]}-1), horizontal flip.
- Weights: `{info["name"]}.safetensors`, {info["file_bytes"]:,} bytes: `model.state_dict()` \
in {info["dtype"]}
  (the temperature in float32). `open_clip.load_checkpoint` loads it into the float32 model.
- Time on this machine ({info["cpu"]}, {info["threads"]} threads): decoding \
{info["decode_s"]:.0f} s, training {info["train_s"]:.0f} s,
  whole run (with evaluation) {info["total_s"]:.0f} s.

Use: `clipdesk index --model {info["name"]}:tests/fixtures/{info["name"]}.safetensors \
--model-config tests/fixtures/{info["name"]}.json`

## Held-out zero-shot accuracy (test split, {res["n"]} photos, 10 classes, chance 10 %)

Top-1 over the 10 class names; the saved files loaded through clipdesk's `ClipEncoder`,
prompts from `clipdesk.tagging.zero_shot.prompt_templates`. The last column is clipdesk's
single-label tagging, where a neutral background class may also win (no tag, "none").

| prompts | top-1 | clipdesk tagging |
|---|---|---|
| single: "a photo of a {{}}." | {res["acc_single"]:.1%} | {res["tag_single"]:.1%} \
(none {res["none_single"]:.1%}) |
| ensemble: `prompt_templates("ensemble")`, {prompts["ensemble"]} prompts | \
{res["acc_ensemble"]:.1%} | {res["tag_ensemble"]:.1%} (none {res["none_ensemble"]:.1%}) |
| all training templates (+ ImageNet ones), {prompts["train"]} prompts | \
{res["acc_train"]:.1%} | {res["tag_train"]:.1%} (none {res["none_train"]:.1%}) |

Cross-check without any clipdesk code (open_clip's `load_checkpoint` and eval transform,
photos decoded at full size): single {info["ref_single"]:.1%}, ensemble \
{info["ref_ensemble"]:.1%}.
Validation split top-1: single {info["val_single"]:.1%}, ensemble {info["val_ensemble"]:.1%}.

{verdict} The text tower learned to (nearly) ignore the template:
the embedding of "a photo of a {{label}}." and those of the {prompts["ensemble"]} ensemble \
prompts of
the same label have cosine similarity {res["template_cos_mean"]:.3f} on average (lowest \
{res["template_cos_min"]:.3f}), so
averaging them changes little. A model trained on varied real captions would differ.

Per class (test photos; top-1 with the single prompt and the ensemble; text-search
precision@5 of the query "a photo of a {{label}}"):

| class | photos | single | ensemble | precision@5 |
|---|---|---|---|---|
{table}
"""
    path.write_text(text, encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.time()
    torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    import open_clip

    from clipdesk.tagging.zero_shot import prompt_templates

    if args.image_size % 32:
        raise SystemExit("--image-size must be a multiple of 32 (ModifiedResNet)")
    train = read_split(args.data, "train")
    val = read_split(args.data, "validation")
    test = read_split(args.data, "test")
    if args.limit:
        train = random.Random(args.seed).sample(train, args.limit)
    classes = sorted({label for _, label in train})
    print(f"train {len(train)}, validation {len(val)}, test {len(test)}; classes {classes}")

    args.out.mkdir(parents=True, exist_ok=True)
    config_path = args.out / f"{args.name}.json"
    config_path.write_text(json.dumps(model_config(args), indent=4) + "\n", encoding="utf-8")
    open_clip.add_model_config(config_path)
    model = open_clip.create_model(args.name, pretrained=None)
    model.visual.to(memory_format=torch.channels_last)  # ~25 % faster convolutions on CPU
    tokenizer = open_clip.get_tokenizer(args.name)
    n_params = sum(p.numel() for p in model.parameters())
    n_visual = sum(p.numel() for p in model.visual.parameters())
    n_token = model.token_embedding.weight.numel()
    print(f"{args.name}: {n_params:,} parameters ({n_visual:,} image tower)")

    t0 = time.time()
    cache_side = round(args.image_size * 1.25)
    images = decode_all([p for p, _ in train], cache_side, args.threads)
    val_images = decode_all([p for p, _ in val], args.image_size, args.threads)
    decode_s = time.time() - t0
    labels = torch.tensor([classes.index(label) for _, label in train])
    val_labels = torch.tensor([classes.index(label) for _, label in val])
    print(f"decoded {len(images) + len(val_images)} photos in {decode_s:.1f} s")

    templates = caption_templates(args.captions)
    if not args.keep_full_stops:
        # Search queries are typed without a full stop: every template also comes without.
        stripped = tuple(t[:-1] for t in templates if t.endswith("."))
        templates = tuple(dict.fromkeys(templates + stripped))
    # Every (template, class) caption tokenised once: caption id = template * C + class.
    captions = [t.format(c) for t in templates for c in classes]
    caption_tokens = tokenizer(captions)

    optimizer = torch.optim.AdamW(
        param_groups(model, args.weight_decay), lr=args.lr, betas=(0.9, 0.98), eps=1e-6
    )
    steps_per_epoch = math.ceil(len(train) / args.batch_size)
    total_steps = args.epochs * steps_per_epoch
    warmup = max(1, round(args.warmup_epochs * steps_per_epoch))

    def lr_at(step: int) -> float:
        if step < warmup:
            return args.lr * (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return args.lr * 0.5 * (1 + math.cos(math.pi * progress))

    gen = torch.Generator().manual_seed(args.seed)
    max_scale = math.log(100)
    step = 0
    t0 = time.time()
    model.train()
    for epoch in range(args.epochs):
        order = torch.randperm(len(train), generator=gen)
        # Drop a last batch smaller than half a batch: too few pairs to contrast.
        batches = [b for b in order.split(args.batch_size) if len(b) >= args.batch_size // 2]
        losses = []
        for idx in batches:
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step)
            batch_labels = labels[idx]
            template = torch.randint(0, len(templates), (len(idx),), generator=gen)
            tokens = caption_tokens[template * len(classes) + batch_labels]
            x = augment(images[idx], args.image_size, gen, args.min_crop)
            x = x.contiguous(memory_format=torch.channels_last)
            image_features = model.encode_image(x, normalize=True)
            text_features = model.encode_text(tokens, normalize=True)
            loss = contrastive_loss(
                image_features, text_features, batch_labels, model.logit_scale.exp()
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, max_scale)
            losses.append(loss.item())
            step += 1
        message = (
            f"epoch {epoch + 1}/{args.epochs}: loss {np.mean(losses):.3f}, "
            f"T^-1 {model.logit_scale.exp().item():.1f}, {time.time() - t0:.0f} s"
        )
        if args.eval_every and ((epoch + 1) % args.eval_every == 0 or epoch + 1 == args.epochs):
            acc = zero_shot_accuracy(
                model, tokenizer, val_images, val_labels, classes, prompt_templates("single")
            )
            message += f", validation top-1 {acc:.1%}"
        print(message, flush=True)
    train_s = time.time() - t0
    model.eval()
    val_single = zero_shot_accuracy(
        model, tokenizer, val_images, val_labels, classes, prompt_templates("single")
    )
    val_ensemble = zero_shot_accuracy(
        model, tokenizer, val_images, val_labels, classes, prompt_templates("ensemble")
    )
    print(f"validation top-1: single {val_single:.1%}, ensemble {val_ensemble:.1%}")

    weights_path = args.out / f"{args.name}.safetensors"
    save_weights(model, weights_path, args.save_dtype)
    # The saved file must load into a fresh float32 model through open_clip's own path.
    fresh = open_clip.create_model(args.name, pretrained=None)
    open_clip.load_checkpoint(fresh, str(weights_path), weights_only=True)
    fresh.eval()
    with torch.no_grad():
        a = model.encode_image(val_images[:64], normalize=True)
        b = fresh.encode_image(val_images[:64], normalize=True)
    print(
        f"saved {weights_path} ({weights_path.stat().st_size:,} bytes); reloaded image "
        f"embeddings differ by at most {float((a - b).abs().max()):.2e}"
    )

    # A reference without clipdesk: the reloaded model, open_clip's transform, full decode.
    test_images = full_decode([p for p, _ in test], args.image_size)
    test_labels = torch.tensor([classes.index(label) for _, label in test])
    reference = {
        kind: zero_shot_accuracy(
            fresh, tokenizer, test_images, test_labels, classes, prompt_templates(kind)
        )
        for kind in ("single", "ensemble")
    }
    res = evaluate_saved(args.name, weights_path, config_path, test, templates)
    print(
        f"open_clip alone (no clipdesk code): single {reference['single']:.1%}, "
        f"ensemble {reference['ensemble']:.1%}"
    )
    if abs(reference["single"] - float(res["acc_single"])) > 0.05:  # type: ignore[arg-type]
        print("WARNING: clipdesk's figures differ from open_clip's: check its preprocessing")
    total_s = time.time() - started
    print(
        f"TEST zero-shot top-1 ({res['n']} photos): single prompt {res['acc_single']:.1%}, "
        f"prompt ensemble {res['acc_ensemble']:.1%} "
        f"(all training templates: {res['acc_train']:.1%})"
    )
    for i, c in enumerate(res["classes"]):  # type: ignore[arg-type]
        print(
            f"  {c:>10}: single {res['per_class_single'][i]:.1%}, "  # type: ignore[index]
            f"ensemble {res['per_class_ensemble'][i]:.1%}"  # type: ignore[index]
        )
    print(
        f"clipdesk tagging (background class may win): single {res['tag_single']:.1%}, "
        f"ensemble {res['tag_ensemble']:.1%}; precision@5 mean "
        f"{np.mean(res['precision_at_5']):.2f}; total {total_s:.0f} s"  # type: ignore[arg-type]
    )
    try:
        shown = args.out.resolve().relative_to(Path.cwd())
    except ValueError:
        shown = args.out
    info = {
        "command": shlex.join([sys.executable.replace(str(REPO) + os.sep, ""), *sys.argv]),
        "name": args.name,
        "n_train": len(train),
        "seed": args.seed,
        "threads": args.threads,
        "vision_layers": args.vision_layers,
        "vision_width": args.vision_width,
        "image_size": args.image_size,
        "text_width": args.text_width,
        "text_layers": args.text_layers,
        "text_heads": args.text_heads,
        "context_length": args.context_length,
        "embed_dim": args.embed_dim,
        "params": n_params,
        "params_visual": n_visual,
        "params_token": n_token,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "weight_decay": args.weight_decay,
        "n_templates": len(templates),
        "captions": args.captions
        + ("" if args.keep_full_stops else ", each also without its final full stop"),
        "min_crop": args.min_crop,
        "dtype": "float16" if args.save_dtype == "fp16" else "float32",
        "file_bytes": weights_path.stat().st_size,
        "cpu": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "decode_s": decode_s,
        "train_s": train_s,
        "total_s": total_s,
        "val_single": val_single,
        "val_ensemble": val_ensemble,
        "ref_single": reference["single"],
        "ref_ensemble": reference["ensemble"],
    }
    write_note(args.out / f"{args.name}.md", info, res)
    print(f"wrote {shown}/{args.name}.json, .safetensors, .md")


if __name__ == "__main__":
    main()
