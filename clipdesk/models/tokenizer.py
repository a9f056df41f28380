"""CLIP's byte-pair-encoding tokenizer, without torch.

A port of open_clip's default ``SimpleTokenizer`` (what ``open_clip.get_tokenizer("ViT-B-32")``
returns: clean="lower", no reduction), itself copied from OpenAI's CLIP (MIT License,
Copyright (c) 2021 OpenAI). It gives the same token ids, but returns numpy arrays so that a text
query can be tokenized without importing torch or open_clip.
"""

from __future__ import annotations

import gzip
import html
import importlib.util
import itertools
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, TypeVar

import ftfy
import numpy as np
import numpy.typing as npt
import regex  # type: ignore[import-untyped]  # ships no type information

if TYPE_CHECKING:
    import torch

DEFAULT_VOCAB_NAME = "bpe_simple_vocab_16e6.txt.gz"
DEFAULT_CONTEXT_LENGTH = 77  # every OpenAI-style CLIP text tower
START_OF_TEXT = "<start_of_text>"
END_OF_TEXT = "<end_of_text>"
# open_clip reads merges = lines[1 : 49152 - 256 - 2 + 1]: line 0 is a version header, and the
# vocabulary is 49408 = 2 * 256 byte symbols + 48894 merges + 2 special tokens.
_MERGES_END = 49152 - 256 - 2 + 1
# Distinct words are few in practice; the bound only keeps a long-lived process from growing
# without limit if it is fed arbitrary text.
_MAX_CACHED_WORDS = 100_000
_NO_RANK = 1 << 62  # above every merge rank: a pair that is not a merge

# Token ids, one row per text: numpy (this tokenizer) or torch (open_clip's).
TokenRows = TypeVar("TokenRows", np.ndarray, "torch.Tensor")


def default_vocab_file() -> Path:
    """The BPE vocabulary file: clipdesk's bundled copy, else the one inside open_clip."""
    bundled = Path(__file__).resolve().parent / "data" / DEFAULT_VOCAB_NAME
    if bundled.is_file():
        return bundled
    # find_spec on a top-level name locates the package without running its __init__ (which
    # would import torch).
    spec = importlib.util.find_spec("open_clip")
    if spec is not None:
        for location in spec.submodule_search_locations or ():
            candidate = Path(location) / DEFAULT_VOCAB_NAME
            if candidate.is_file():
                return candidate
    raise FileNotFoundError(
        f"CLIP BPE vocabulary {DEFAULT_VOCAB_NAME} not found in clipdesk/models/data or in "
        "open_clip"
    )


@lru_cache(maxsize=1)
def _bytes_to_unicode() -> dict[int, str]:
    """Each of the 256 byte values as a printable character (the BPE works on these)."""
    # Printable Latin-1 bytes stand for themselves; the rest (controls, space, soft hyphen...)
    # are moved to 256 and up so that no symbol is whitespace or a control character.
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(2**8):
        if b not in bs:
            bs.append(b)
            cs.append(2**8 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs), strict=True))


def _pairs(word: tuple[str, ...]) -> set[tuple[str, str]]:
    return set(itertools.pairwise(word))


def _basic_clean(text: str) -> str:
    text = ftfy.fix_text(text)
    # Twice, as CLIP does: captions scraped from the web are often escaped twice ("&amp;amp;").
    text = html.unescape(html.unescape(text))
    return text.strip()


def _whitespace_clean(text: str) -> str:
    return " ".join(text.split()).strip()


def _clean_lower(text: str) -> str:
    return _whitespace_clean(_basic_clean(text)).lower()


class _Vocab(NamedTuple):
    encoder: dict[str, int]
    bpe_ranks: dict[tuple[str, ...], int]


@lru_cache(maxsize=4)
def _load_vocab(path: Path) -> _Vocab:
    """Read a vocabulary file once per process; every tokenizer on it shares the tables."""
    text = gzip.decompress(path.read_bytes()).decode("utf-8")
    # The file has 262k lines but only the first 48895 are used: stop splitting there.
    merges = [tuple(line.split()) for line in text.split("\n", _MERGES_END)[1:_MERGES_END]]
    for number, merge in enumerate(merges, start=2):
        if len(merge) != 2:
            raise ValueError(f"{path}: line {number} is not a BPE merge: {merge!r}")
    symbols = list(_bytes_to_unicode().values())
    # Built in open_clip's order, since a token's id is its position in this list.
    vocab = symbols + [s + "</w>" for s in symbols]
    vocab.extend("".join(merge) for merge in merges)
    vocab.extend([START_OF_TEXT, END_OF_TEXT])
    encoder = dict(zip(vocab, range(len(vocab)), strict=True))
    bpe_ranks = dict(zip(merges, range(len(merges)), strict=True))
    return _Vocab(encoder, bpe_ranks)


class ClipTokenizer:
    """Text to CLIP token ids, identical to open_clip's default tokenizer.

    Safe to share between threads: the tables are read-only and the word cache is a dict whose
    single-key reads and writes are atomic under the GIL (a race only computes a word twice).
    """

    def __init__(
        self, vocab_file: str | Path | None = None, context_length: int = DEFAULT_CONTEXT_LENGTH
    ) -> None:
        if context_length < 1:
            raise ValueError(f"context_length must be at least 1, not {context_length}")
        path = default_vocab_file() if vocab_file is None else Path(vocab_file)
        vocab = _load_vocab(path.resolve())
        self._encoder = vocab.encoder
        self._bpe_ranks = vocab.bpe_ranks
        self.vocab_size = len(self._encoder)
        self.context_length = context_length
        self.sot_token_id = self._encoder[START_OF_TEXT]
        self.eot_token_id = self._encoder[END_OF_TEXT]
        # Special tokens written in the text itself are kept whole and map to their ids, as in
        # open_clip (its cache is seeded with them and its pattern matches them first).
        self._cache: dict[str, str] = {START_OF_TEXT: START_OF_TEXT, END_OF_TEXT: END_OF_TEXT}
        self._pattern = regex.compile(
            rf"{START_OF_TEXT}|{END_OF_TEXT}|'s|'t|'re|'ve|'m|'ll|'d|[\p{{L}}]+|[\p{{N}}]"
            r"|[^\s\p{L}\p{N}]+",
            regex.IGNORECASE,
        )
        # Same mapping as bytes_to_unicode, applied with str.translate to the text decoded as
        # Latin-1 (one character per byte): much faster than a join over the bytes.
        self._byte_table = _bytes_to_unicode()

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``, without the start and end tokens or any padding."""
        ids: list[int] = []
        for word in self._pattern.findall(_clean_lower(text)):
            symbols = word.encode("utf-8").decode("latin-1").translate(self._byte_table)
            ids.extend(self._encoder[piece] for piece in self._bpe(symbols).split(" "))
        return ids

    def __call__(
        self, texts: str | Sequence[str], context_length: int | None = None
    ) -> npt.NDArray[np.int64]:
        """Token ids, shape (number of texts, context_length): start, text, end, then zeros.

        A text too long for the context is cut, and its last kept token replaced by the end
        token, as open_clip does without a reduction function.
        """
        if context_length is None:
            context_length = self.context_length
        if context_length < 1:
            raise ValueError(f"context_length must be at least 1, not {context_length}")
        batch = [texts] if isinstance(texts, str) else list(texts)
        result = np.zeros((len(batch), context_length), dtype=np.int64)
        for row, text in enumerate(batch):
            tokens = [self.sot_token_id, *self.encode(text), self.eot_token_id]
            if len(tokens) > context_length:
                tokens = tokens[:context_length]
                tokens[-1] = self.eot_token_id
            result[row, : len(tokens)] = tokens
        return result

    def _bpe(self, token: str) -> str:
        """The word's BPE pieces, space-separated; the last one carries the "</w>" suffix."""
        cached = self._cache.get(token)
        if cached is not None:
            return cached
        word: tuple[str, ...] = (*token[:-1], token[-1] + "</w>")
        pairs = _pairs(word)
        if not pairs:
            return token + "</w>"
        ranks = self._bpe_ranks
        while True:
            # Merge the lowest-ranked (earliest learned) pair everywhere it occurs, then repeat.
            bigram = min(pairs, key=lambda pair: ranks.get(pair, _NO_RANK))
            if bigram not in ranks:
                break
            first, second = bigram
            merged: list[str] = []
            i = 0
            while i < len(word):
                try:
                    j = word.index(first, i)
                except ValueError:
                    merged.extend(word[i:])
                    break
                merged.extend(word[i:j])
                i = j
                if i < len(word) - 1 and word[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(first)
                    i += 1
            word = tuple(merged)
            if len(word) == 1:
                break
            pairs = _pairs(word)
        pieces = " ".join(word)
        if len(self._cache) < _MAX_CACHED_WORDS:
            self._cache[token] = pieces
        return pieces


def trim_tokens(tokens: TokenRows) -> TokenRows:
    """``tokens`` (texts, context) cut after the furthest column any row's argmax is in.

    For a causal text tower that pools the argmax (CLIP's: the end token has the highest
    id), that drops only padding no feature depends on (``towers.short_text_tower`` tells
    which towers). Works on numpy arrays and torch tensors alike.
    """
    if tokens.shape[0] == 0:
        return tokens
    cut: TokenRows = tokens[:, : int(tokens.argmax(-1).max()) + 1]
    return cut
