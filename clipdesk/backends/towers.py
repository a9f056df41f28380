"""open_clip's towers, computing only what the pooled feature reads.

The image tower: a ViT that pools its class token reads one row of the last block's
output, yet the plain forward computes that block for every token. Only the keys and values
need every token; the query, the attention output, the MLP and the norms need the class
token alone. On ViT-B-32 (50 tokens) that skips about 6.6 % of the tower's multiply-adds
(ViT-B-16: 6.9 %), and the result is the same up to fp32 rounding (tests/unit/test_towers.py).

The text tower: CLIP's text encoder is causal and pools the end token, so no position after
a text's end token changes its feature. :class:`ShortTextTower` reads as many positions as
its input has, and ``clipdesk.models.tokenizer.trim_tokens`` cuts a batch after its longest text:
a prompt of 12 tokens costs 12 positions instead of 77 (tagging's prompts: 6-8x faster
on ViT-B-32, bench/bench_text.py), with the same features up to fp32 rounding.

Imports torch: import this module only where torch is already in use.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Protocol, cast

import torch
from open_clip.transformer import ResidualAttentionBlock
from torch import Tensor, nn
from torch.nn import functional


class ClassTokenBlock(nn.Module):
    """A ResidualAttentionBlock that returns the class token's row alone."""

    def __init__(self, block: ResidualAttentionBlock, batch_first: bool) -> None:
        super().__init__()
        self.block = block
        self.batch_first = batch_first

    def forward(self, x: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        block = self.block
        if not self.batch_first:
            x = x.transpose(0, 1)  # (tokens, batch, width) -> (batch, tokens, width)
        normed = block.ln_1(x)
        out: Tensor = x[:, :1] + block.ls_1(self._attend(normed[:, :1], normed, attn_mask))
        out = out + block.ls_2(block.mlp(block.ln_2(out)))
        return out if self.batch_first else out.transpose(0, 1)

    def _attend(self, query: Tensor, keys: Tensor, attn_mask: Tensor | None) -> Tensor:
        attn = self.block.attn
        if not attn.batch_first:
            query, keys = query.transpose(0, 1), keys.transpose(0, 1)
        attended: Tensor = attn(query, keys, keys, need_weights=False, attn_mask=attn_mask)[0]
        return attended if attn.batch_first else attended.transpose(0, 1)


def class_token_tower(visual: nn.Module) -> nn.Module:
    """``visual`` with its last block computed for the class token only, sharing its
    weights; ``visual`` itself where that would not give the same result (another pooling,
    attention pooling, tokens asked for, an unfamiliar block)."""
    layout = _class_token_layout(visual)
    if layout is None:
        return visual
    transformer = copy.copy(layout[0])
    transformer._modules = dict(transformer._modules)  # children of its own, same weights
    blocks = list(layout[1])
    blocks[-1] = ClassTokenBlock(blocks[-1], bool(getattr(transformer, "batch_first", False)))
    transformer._modules["resblocks"] = nn.ModuleList(blocks)
    lean = copy.copy(visual)
    lean._modules = dict(visual._modules)
    lean._modules["transformer"] = transformer
    return lean


class TextTransformer(Protocol):
    """What :class:`ShortTextTower` reads of open_clip's text transformer."""

    resblocks: Iterable[ResidualAttentionBlock]

    def get_cast_dtype(self) -> torch.dtype: ...


class TextTower(Protocol):
    """What :class:`ShortTextTower` reads of open_clip's text tower (a CLIP, or a custom-text
    CLIP's ``.text``), once :func:`short_text_tower` has checked it."""

    token_embedding: nn.Embedding
    positional_embedding: nn.Parameter
    transformer: TextTransformer
    ln_final: nn.Module
    text_projection: nn.Linear | Tensor | None
    attn_mask: Tensor


class ShortTextTower(nn.Module):
    """Tokens (batch, length) to text features, for any length up to the context length.

    The computation of open_clip's ``encode_text`` on the first ``length`` positions: exact
    for every text whose end token lies within them (``trim_tokens``). Run, it calls the
    model's own blocks. Traced to ONNX, its attention is written out (the same products as
    ``nn.MultiheadAttention``'s), because that module's trace fixes the sequence length;
    here the length stays a dynamic axis.
    """

    def __init__(self, text: TextTower) -> None:
        super().__init__()
        self.token_embedding = text.token_embedding
        self.positional_embedding = text.positional_embedding
        self.blocks = text.transformer.resblocks
        self.ln_final = text.ln_final
        self.text_projection = text.text_projection
        # The model itself, not as a child (for a CLIP that would take in its image tower
        # too): its causal mask (a buffer) and dtype are read from it at each call, so that
        # they follow the model's moves between devices and precisions.
        self.text = [text]

    def forward(self, tokens: Tensor) -> Tensor:
        length = tokens.shape[1]
        cast_dtype = self.text[0].transformer.get_cast_dtype()  # fp16 where the model is
        x = self.token_embedding(tokens).to(cast_dtype)
        x = x + self.positional_embedding[:length].to(cast_dtype)
        mask = self.text[0].attn_mask[:length, :length].to(x.dtype)
        exporting = torch.onnx.is_in_onnx_export()
        for block in self.blocks:
            if exporting:
                x = x + block.ls_1(_attend(block.attn, block.ln_1(x), mask))
                x = x + block.ls_2(block.mlp(block.ln_2(x)))
            else:
                x = block(x, attn_mask=mask)
        x = self.ln_final(x)
        pooled = x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)]
        projection = self.text_projection
        if isinstance(projection, nn.Linear):
            return projection(pooled)  # type: ignore[no-any-return]
        return pooled if projection is None else pooled @ projection  # type: ignore[no-any-return]


def _attend(attn: nn.MultiheadAttention, x: Tensor, mask: Tensor) -> Tensor:
    """``attn(x, x, x, attn_mask=mask)`` of a batch-first, packed-projection module, as
    traceable ops with no fixed length."""
    q, k, v = functional.linear(x, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    q, k, v = (t.unflatten(-1, (attn.num_heads, -1)).transpose(1, 2) for t in (q, k, v))  # type: ignore[no-untyped-call]
    out = functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return attn.out_proj(out.transpose(1, 2).flatten(-2))  # type: ignore[no-any-return]


def short_text_tower(model: nn.Module) -> ShortTextTower | None:
    """The text tower of ``model`` (an open_clip CLIP, or a custom-text CLIP's text
    transformer) as a :class:`ShortTextTower`; None where a shorter input would change
    a feature (no causal mask, padding masks, a class token, another pooling) or the
    blocks and layout are not the ones it was written for."""
    text = getattr(model, "text", model)  # CustomTextCLIP keeps its tower in .text
    pool = getattr(text, "pool_type", getattr(text, "text_pool_type", None))
    transformer = getattr(text, "transformer", None)
    blocks = getattr(transformer, "resblocks", None)
    if (
        pool != "argmax"
        or getattr(text, "cls_emb", None) is not None
        or getattr(text, "use_pad_mask", False)
        or not isinstance(getattr(text, "token_embedding", None), nn.Embedding)
        or not isinstance(getattr(text, "positional_embedding", None), nn.Parameter)
        or not hasattr(text, "ln_final")
        # open_clip before 2.26 ran its transformer tokens-first, transposed by the caller
        or getattr(transformer, "batch_first", None) is not True
        or not hasattr(transformer, "get_cast_dtype")
        or not isinstance(blocks, nn.ModuleList)
        or not all(_plain_block(block) for block in blocks)
        or not _is_causal(getattr(text, "attn_mask", None))
    ):
        return None
    return ShortTextTower(cast(TextTower, text))


def _self_attention(block: object) -> nn.MultiheadAttention | None:
    """The attention of open_clip's own ResidualAttentionBlock attending to itself with
    torch's module; None for any other block."""
    if type(block) is not ResidualAttentionBlock or hasattr(block, "ln_1_kv"):
        return None  # another block, or a cross-attention block
    attn = getattr(block, "attn", None)
    return attn if isinstance(attn, nn.MultiheadAttention) else None


def _plain_block(block: object) -> bool:
    """A self-attention block whose attention ``_attend`` computes alike."""
    attn = _self_attention(block)
    if attn is None:
        return False
    return bool(
        attn.batch_first
        and attn._qkv_same_embed_dim
        and attn.in_proj_weight is not None
        and attn.bias_k is None
        and not attn.add_zero_attn
    )


def _is_causal(mask: object) -> bool:
    if not isinstance(mask, torch.Tensor) or mask.ndim != 2 or mask.shape[0] != mask.shape[1]:
        return False
    mask = mask.cpu()
    future = torch.ones(mask.shape, dtype=torch.bool).triu(1)
    return bool(torch.equal(torch.isneginf(mask), future) and not mask[~future].any())


def _class_token_layout(visual: nn.Module) -> tuple[nn.Module, nn.ModuleList] | None:
    """The transformer of ``visual`` and its blocks, where it pools the class token with
    open_clip's own self-attention block last; None otherwise."""
    transformer = getattr(visual, "transformer", None)
    blocks = getattr(transformer, "resblocks", None)
    if not isinstance(blocks, nn.ModuleList) or len(blocks) == 0:
        return None
    pools_the_class_token = (
        getattr(visual, "pool_type", None) == "tok"
        and getattr(visual, "attn_pool", None) is None
        and not getattr(visual, "output_tokens", False)
        and _self_attention(blocks[-1]) is not None
    )
    if not pools_the_class_token or not isinstance(transformer, nn.Module):
        return None
    return transformer, blocks
