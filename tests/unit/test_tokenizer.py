"""The torch-free tokenizer gives exactly open_clip's token ids, and never imports torch."""

from __future__ import annotations

import importlib.util
import random
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import clipdesk.models.tokenizer as tokenizer_module
from clipdesk.models.tokenizer import (
    DEFAULT_VOCAB_NAME,
    ClipTokenizer,
    default_vocab_file,
    trim_tokens,
)
from tests.helpers import ROOT

HANDWRITTEN = [
    "",
    " ",
    "   \t\n  ",
    "\u3000\u00a0",  # ideographic and no-break spaces
    "\u200b",  # zero-width space: not whitespace to str.split
    "a dog",
    "A DOG",
    "a Dog In The SNOW",
    "a photo of a cat.",
    "Hello, World!",
    "don't stop, it's fine, we're here, they've gone, I'm ok, you'll see, he'd go",
    "DON'T SHOUT, IT'S LOUD",
    "it’s a “quoted” word",  # curly quotes: ftfy straightens them
    "naïve café résumé",
    "Crème brûlée à la française",
    "cafÃ©",  # mojibake that ftfy repairs
    "SchÃ¶ne GrÃ¼ÃŸe",
    "straße STRASSE Straße",
    "İstanbul ıi",  # Turkish dotted/dotless i lower-case to more than one character
    "ΟΔΟΣ Σίσυφος",  # Greek final sigma
    "Привет, мир! Москва",
    "日本語のテキスト 東京タワー",
    "中文 测试 北京烤鸭",
    "한국어 서울",
    "مرحبا بالعالم",
    "שלום עולם",
    "नमस्ते दुनिया",  # combining marks are not letters to \p{L}
    "สวัสดีครับ",
    "emoji 😀🐶🌈 party 🎉",
    "family 👨‍👩‍👧‍👦 flag 🇫🇷 skin 👍🏽",
    "❤️ ✨ ☕",
    "fish &amp; chips",
    "fish &amp;amp; chips",  # escaped twice
    "fish &amp;amp;amp; chips",  # three times: ftfy undoes one, html.unescape two more
    "<p>fish &amp;amp; chips</p>",  # with a tag ftfy leaves entities to html.unescape
    "&lt;b&gt;bold&lt;/b&gt; &quot;quoted&quot; &#39;single&#39; &#x263A;",
    "<b>real tags</b> <br/>",
    "Tom &amp Jerry &nbsp; &copy; 2024",
    "1234567890",
    "3.14159 and 2,718 and -42 and +7",
    "½ ¾ ² ³ ⅓ Ⅻ ٣ ٤",  # numeric characters that are not ASCII digits
    "ＡＢＣ　ｆｕｌｌｗｉｄｔｈ",
    "ﬁnance ﬂower",  # ligatures
    "e\u0301 versus é",  # combining acute versus precomposed
    "!!!???...,,,;;;",
    "@#$%^&*()_+-=[]{}|\\:;\"'<>,.?/~`",
    "snake_case_words and kebab-case-words",
    "user@example.com https://example.com/path?q=1&r=2#frag",
    "C++ and C# and F# and .NET",
    "#hashtag @mention $100 50% 3rd 21st",
    "tab\tseparated\tvalues\nand\nnew\r\nlines",
    "multiple     spaces     between",
    "\x00\x01\x07 control \x1b[31m characters",
    "soft\u00adhyphen",
    "<start_of_text>",
    "<end_of_text>",
    "before <start_of_text> middle <end_of_text> after",
    "<START_OF_TEXT> upper-case special",
    "<start_of_text><end_of_text>",
    "'s",
    "'",
    "''''",
    "a'b'c'd",
    "o'clock rock'n'roll",
    "MiXeD cAsE sTrInG",
    "ALL CAPS SENTENCE WITH NUMBERS 123",
    "supercalifragilisticexpialidocious",
    "pneumonoultramicroscopicsilicovolcanoconiosis",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "x" * 1000,  # one very long word
    "a " * 100,  # far too many words for the context
    "the quick brown fox jumps over the lazy dog " * 20,
    "😀" * 90,  # many multi-token emoji
    "é" * 200,
    "日本" * 120,
    "1" * 150,  # digits are one token each
    " ".join(str(i) for i in range(200)),
    "word " * 30 + "end",  # 31 words: over 32 tokens with start and end, under 77
    "w " * 30,  # exactly 30 tokens: 32 with start and end
    "w " * 31,  # 31 tokens: one too many for 32
    "w " * 75,  # 75 tokens: exactly 77 with start and end
    "w " * 76,  # one too many for 77
]

TEMPLATES = [
    "a photo of a {}.",
    "a bad photo of a {}.",
    "a photo of many {}.",
    "a sculpture of a {}.",
    "a photo of the hard to see {}.",
    "a low resolution photo of the {}.",
    "a rendering of a {}.",
    "graffiti of a {}.",
    "a cropped photo of the {}.",
    "a tattoo of a {}.",
    "itap of a {}.",
    "a photo of my {}.",
]

CLASSNAMES = ["dog", "T-shirt/top", "Ankle boot", "great white shark", "crème brûlée", "pião"]

_POOL = (
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    "      \t\n.,;:!?'\"()[]{}<>/\\|@#$%^&*-_+=~`"
    "àáâãäåæçèéêëìíîïñòóôõöøùúûüýÿßœ"
    "αβγδεζηθΣσςΩωабвгдежзийклмнопрЖЩЯ"
    "日本語中文한국어ひらがなカタカナ"
    "مرحباשלוםनमस्तेสวัสดี"
    "😀🐶🌈🎉👍🏽‍❤️✨☕🇫🇷"
    "½²³ⅫＡｆ\u00a0\u3000\u200b\u00ad\u0301"
    "&;"
)


def _random_strings(count: int) -> list[str]:
    rng = random.Random(20240601)  # fixed: a failure must be reproducible
    words = ["amp", "lt", "gt", "quot", "nbsp", "#39", "start_of_text", "'s", "'ll"]
    out = []
    for _ in range(count):
        parts = []
        for _ in range(rng.randint(1, 40)):
            if rng.random() < 0.1:
                parts.append(rng.choice(["&", "<", "'"]) + rng.choice(words))
            else:
                parts.append("".join(rng.choice(_POOL) for _ in range(rng.randint(1, 8))))
        out.append(rng.choice(["", " ", "  "]).join(parts))
    return out


TEXTS = (
    HANDWRITTEN
    + [template.format(name) for template in TEMPLATES for name in CLASSNAMES]
    + _random_strings(100)
)


@pytest.fixture(scope="module")
def reference() -> Any:
    open_clip = pytest.importorskip("open_clip")
    return open_clip.get_tokenizer("ViT-B-32")


@pytest.fixture(scope="module")
def ours() -> ClipTokenizer:
    return ClipTokenizer()


def test_there_are_enough_varied_texts() -> None:
    assert len(TEXTS) >= 200
    assert len(set(TEXTS)) == len(TEXTS)


@pytest.mark.parametrize("context_length", [77, 32])
def test_token_arrays_match_open_clip(
    reference: Any, ours: ClipTokenizer, context_length: int
) -> None:
    expected = reference(TEXTS, context_length=context_length).numpy()
    got = ours(TEXTS, context_length=context_length)
    assert got.dtype == np.int64
    assert got.shape == (len(TEXTS), context_length) == expected.shape
    mismatched = [TEXTS[i] for i in np.flatnonzero((got != expected).any(axis=1))]
    assert not mismatched, f"{len(mismatched)} texts differ, e.g. {mismatched[:5]!r}"


def test_encode_matches_open_clip_untruncated(reference: Any, ours: ClipTokenizer) -> None:
    for text in TEXTS:
        assert ours.encode(text) == reference.encode(text), text


def test_matches_open_clip_on_its_default_context_and_single_strings(
    reference: Any, ours: ClipTokenizer
) -> None:
    assert ours.vocab_size == reference.vocab_size == 49408
    assert ours.context_length == reference.context_length == 77
    for text in ["a dog", "", "x" * 500]:
        single = ours(text)
        assert single.shape == (1, 77)
        np.testing.assert_array_equal(single, reference(text).numpy())
    np.testing.assert_array_equal(ours(("a", "b")), reference(["a", "b"]).numpy())


def test_layout_start_text_end_then_zeros(ours: ClipTokenizer) -> None:
    row = ours("a dog")[0]
    assert row[0] == ours.sot_token_id == 49406
    assert list(row[1:3]) == ours.encode("a dog")
    assert row[3] == ours.eot_token_id == 49407
    assert not row[4:].any()

    cut = ours("w " * 100, context_length=8)[0]
    assert cut[0] == ours.sot_token_id and cut[-1] == ours.eot_token_id
    assert list(cut[1:-1]) == ours.encode("w " * 6)

    assert ours([]).shape == (0, 77)
    assert ClipTokenizer(context_length=16)("a").shape == (1, 16)
    with pytest.raises(ValueError):
        ours("a", context_length=0)


def test_trimming_cuts_the_padding_after_the_longest_text_only(ours: ClipTokenizer) -> None:
    tokens = ours(["a dog", "a dog on a beach at sunset", ""])
    trimmed = trim_tokens(tokens)
    longest = len(ours.encode("a dog on a beach at sunset")) + 2
    assert trimmed.shape == (3, longest)
    np.testing.assert_array_equal(trimmed, tokens[:, :longest])
    assert trimmed[1, -1] == ours.eot_token_id  # the longest keeps its end token
    assert not tokens[:, longest:].any()  # only padding was cut
    full = ours(["w " * 100])
    assert trim_tokens(full).shape == full.shape  # a text that fills the context
    assert trim_tokens(ours([])).shape == (0, 77)
    if importlib.util.find_spec("torch"):
        import torch

        as_tensor = trim_tokens(torch.from_numpy(tokens))
        assert isinstance(as_tensor, torch.Tensor)
        np.testing.assert_array_equal(as_tensor.numpy(), trimmed)


def test_threads_sharing_one_tokenizer_agree() -> None:
    shared = ClipTokenizer()
    expected = ClipTokenizer()(TEXTS)
    results: list[np.ndarray[Any, Any]] = []

    def job() -> None:
        results.append(shared(TEXTS))

    threads = [threading.Thread(target=job) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 4
    for result in results:
        np.testing.assert_array_equal(result, expected)


def test_vocab_is_bundled_and_open_clip_is_the_fallback(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bundled = default_vocab_file()
    assert bundled == Path(tokenizer_module.__file__).parent / "data" / DEFAULT_VOCAB_NAME

    # Without the bundled copy: open_clip's, found without importing open_clip.
    monkeypatch.setattr(tokenizer_module, "__file__", str(tmp_path / "tokenizer.py"))
    fallback = default_vocab_file()
    assert fallback.parent.name == "open_clip"
    assert fallback.read_bytes() == bundled.read_bytes()
    np.testing.assert_array_equal(ClipTokenizer(fallback)(TEXTS[:20]), ClipTokenizer()(TEXTS[:20]))

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError):
        default_vocab_file()


def test_importing_and_tokenizing_loads_neither_torch_nor_open_clip() -> None:
    code = (
        "import sys, clipdesk.models.tokenizer as t; t.ClipTokenizer()(['a dog']); "
        "t.default_vocab_file(); "
        "assert 'torch' not in sys.modules and 'open_clip' not in sys.modules, "
        "[m for m in sys.modules if m.split('.')[0] in ('torch', 'open_clip')]"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)
