"""`clipdesk search` and `clipdesk similar` with the search syntax, filters, the relevance
cutoff and date order, as a user runs them (separate processes, the trained test model)."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from tests.helpers import CLOTHING_CONFIG, CLOTHING_SPEC, FIXTURE_PHOTOS, run_cli, run_cli_json

ENV = {"CLIPDESK_AUTO_EXPORT": "0", "CLIPDESK_BACKEND": "torch-fp32"}


@pytest.fixture(scope="module")
def clothing_library(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("search")
    photos = base / "photos"
    shutil.copytree(FIXTURE_PHOTOS, photos, ignore=shutil.ignore_patterns("LICENSE"))
    shutil.rmtree(photos / "hat")  # a class the model knows, absent from the library
    for number, photo in enumerate(sorted(photos.rglob("*.jpg"))):
        stamp = time.mktime((2023, 1 + number % 12, 10, 12, 0, 0, 0, 0, -1))
        os.utime(photo, (stamp, stamp))
    library = base / "library"
    run_cli("add", str(photos), library=library, env=ENV)
    model = ["--model", CLOTHING_SPEC, "--model-config", str(CLOTHING_CONFIG)]
    run_cli("index", *model, library=library, env=ENV)
    return library, photos


def test_the_cutoff_returns_the_relevant_photos_or_says_none_match(
    clothing_library: tuple[Path, Path],
) -> None:
    library, _ = clothing_library
    plain = run_cli_json("search", "a photo of shoes", library=library)
    assert len(plain) == 20  # the CLI's default stays a fixed top 20
    relevant = run_cli_json("search", "a photo of shoes", "--cutoff", "auto", library=library)
    assert 1 <= len(relevant) < 20
    assert [h["path"] for h in relevant] == [h["path"] for h in plain[: len(relevant)]]
    assert sum("/shoes/" in h["path"] for h in relevant) >= len(relevant) / 2
    assert set(relevant[0]) >= {"path", "score", "id", "width", "height", "taken_at"}
    absent = run_cli("search", "a photo of a hat", "--cutoff", "auto", library=library, env=ENV)
    lines = absent.stdout.strip().splitlines()
    assert lines == [] or "no photo matches" in lines[0] or len(lines) <= 2


def test_filters_as_options_and_in_the_text_agree(clothing_library: tuple[Path, Path]) -> None:
    library, photos = clothing_library
    typed = run_cli_json("search", "shirt in:pants after:2023-03", library=library)
    options = run_cli_json(
        "search", "shirt", "--folder", str(photos / "pants"), "--after", "2023-03", library=library
    )
    assert typed == options and typed
    assert all("/pants/" in h["path"] and h["taken_at"] >= "2023-03" for h in typed)
    listed = run_cli("search", "in:pants", library=library, env=ENV).stdout.splitlines()
    assert len(listed) == 3 and all(line[:4] == "2023" and "/pants/" in line for line in listed)
    newest = run_cli_json(
        "search", "a photo", "--sort", "newest", "--cutoff", "none", "-k", "8", library=library
    )
    stamps = [h["taken_at"] for h in newest]
    assert stamps == sorted(stamps, reverse=True) and len(newest) == 8


def test_query_arithmetic_and_more_like_these(clothing_library: tuple[Path, Path]) -> None:
    library, photos = clothing_library
    for query in ("t-shirt", "x-ray", "2 dogs"):  # ordinary queries stay one text
        assert run_cli_json("search", query, "-k", "3", library=library)
    minus = run_cli_json("search", "dress -skirt", "-k", "10", library=library)
    assert sum("/skirt/" in h["path"] for h in minus) <= sum(
        "/skirt/" in h["path"] for h in run_cli_json("search", "dress", "-k", "10", library=library)
    )
    chosen = sorted(str(p) for p in (photos / "dress").iterdir())[:2]
    like = run_cli_json("similar", *chosen, "-k", "5", library=library)
    assert len(like) == 5 and not {h["path"] for h in like} & set(chosen)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["search", "shirt after:2023-13"], "no month 13"),
        (["search", "shirt", "--before", "yesterday"], "--before yesterday"),
        (["search", "shirt", "--folder", "Holidays"], "no folder named 'Holidays'"),
        (["search", "shirt", "--tag", "family"], "no tag named 'family'"),
        (["search", "shirt", "--after", "2099"], "no photo passes the filters"),
        (["search", "beach -beach"], "cancel each other out"),
        (["similar", "/nowhere/x.jpg"], "no such photo"),
    ],
)
def test_bad_searches_get_one_clear_line_and_exit_2(
    clothing_library: tuple[Path, Path], args: list[str], message: str
) -> None:
    library, _ = clothing_library
    out = run_cli(*args, library=library, check=False, env=ENV)
    assert out.returncode == 2, out.stderr
    assert message in out.stderr and "Traceback" not in out.stderr
