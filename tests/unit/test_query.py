"""The search syntax (terms, weights, images, inline filters) and the query arithmetic."""

from __future__ import annotations

import dataclasses
import random
from datetime import date, datetime
from pathlib import Path

import numpy as np
import pytest

from clipdesk.errors import ClipdeskError
from clipdesk.search.query import (
    Filters,
    ParsedQuery,
    QueryError,
    Term,
    combine,
    filters_from_options,
    format_query,
    orientation_of,
    parse_date,
    parse_query,
)

# Queries people type that must be searched as they are: one text term, the input itself.
ORDINARY = [
    "t-shirt",
    "x-ray",
    "2 dogs",
    "a - b",
    "rock-n-roll",
    "+1 phone",
    "C++ book",
    '"new york" at night',
    "10:30 sunset",
    "note: dog",
    "http://x",
    "https://example.com/boat.jpg",
    "mother-in-law",
    "e-mail from mom",
    "-",
    "a -",
    "-5 degrees",
    "covid-19 test",
    "9-5 job",
    "#1 dad mug",
    "50% off",
    "don't panic",
    '12" vinyl',
    '12" vinyl and 7" singles',
    "16:9 screen",
    "John 3:16",
    "2:1 ratio",
    "2:30pm meeting",
    "before:after photos",
    "in: the box",
    "type: dog",
    "after: dinner",
    "1+1",
    "a+b",
    "new year's eve",
    "rock 'n' roll",
    "smile :)",
    ":-)",
    "re: meeting",
    "R&B concert",
    "résumé photo",
    "AT&T store",
    "U-2 spy plane",
    "size 10 shoes",
    "photo:beach",
    "photos of boats/ships",
    "AC/DC concert",
    "boat.jpg",
    "my boat.jpg",
    "what? no!",
    "a  b   c",
    "after:lunch",
    "minpx:large",
    "orientation:2",
]


@pytest.mark.parametrize("query", ORDINARY)
def test_an_ordinary_query_is_searched_as_typed(query: str) -> None:
    parsed = parse_query(query)
    assert parsed == ParsedQuery((Term("text", query),))
    assert parse_query(format_query(parsed)) == parsed


@pytest.mark.parametrize("query", ["-people", '"-people"', "in:Holidays", '"in:Holidays"'])
def test_quoting_the_whole_query_searches_its_literal_text(query: str) -> None:
    if not query.startswith('"'):
        query = f'"{query}"'
    assert parse_query(query).terms == (Term("text", query[1:-1]),)
    assert parse_query(query).filters.is_empty()


def test_typographic_quotes_work_like_plain_ones() -> None:
    assert parse_query("\u201c-people\u201d").terms == (Term("text", "-people"),)
    parsed = parse_query("x in:\u201cMy Holidays\u201d")
    assert parsed.filters.folders == ("My Holidays",)


def test_empty_query() -> None:
    assert parse_query("") == ParsedQuery()
    assert parse_query("   ") == ParsedQuery()
    assert format_query(ParsedQuery()) == ""


# -- terms -----------------------------------------------------------------------------


def test_negative_word() -> None:
    assert parse_query("beach -people").terms == (
        Term("text", "beach"),
        Term("text", "people", -1.0),
    )


def test_a_negative_takes_one_word_and_the_rest_stays_in_the_text() -> None:
    assert parse_query("beach -people at night").terms == (
        Term("text", "beach at night"),
        Term("text", "people", -1.0),
    )


def test_a_quoted_negative_takes_several_words() -> None:
    assert parse_query('beach -"people walking"').terms == (
        Term("text", "beach"),
        Term("text", "people walking", -1.0),
    )


def test_plus_adds_terms() -> None:
    assert parse_query("sunset + boat on a lake").terms == (
        Term("text", "sunset"),
        Term("text", "boat on a lake"),
    )


def test_a_lone_plus_always_separates_and_empty_terms_are_left_out() -> None:
    assert parse_query("a + + b").terms == (Term("text", "a"), Term("text", "b"))
    assert parse_query("sunset +").terms == (Term("text", "sunset"),)
    assert parse_query("+ plus sign").terms == (Term("text", "plus sign"),)
    assert parse_query("+") == ParsedQuery()
    assert parse_query("sunset + in:x").filters.folders == ("x",)


def test_weights() -> None:
    assert parse_query("2:sunset + boat").terms == (
        Term("text", "sunset", 2.0),
        Term("text", "boat"),
    )
    assert parse_query("sunset -0.5:people").terms == (
        Term("text", "sunset"),
        Term("text", "people", -0.5),
    )
    assert parse_query(".5:sunset sky").terms == (Term("text", "sunset sky", 0.5),)
    assert parse_query('1.5:"30 seconds"').terms == (Term("text", "30 seconds", 1.5),)


def test_a_weight_starts_a_new_term() -> None:
    assert parse_query("sunset 2:calm sea").terms == (
        Term("text", "sunset"),
        Term("text", "calm sea", 2.0),
    )


def test_weight_zero_is_an_error() -> None:
    with pytest.raises(QueryError, match="weight"):
        parse_query("0:sunset")
    with pytest.raises(QueryError, match="weight"):
        parse_query("beach -0.0:people")


@pytest.mark.parametrize(
    ("query", "path"),
    [
        ("./boat.jpg", "./boat.jpg"),
        ("../up/boat.PNG", "../up/boat.PNG"),
        ("/home/me/boat.heic", "/home/me/boat.heic"),
        ("~/boat.jpeg", "~/boat.jpeg"),
        (r"C:\Photos\boat.jpg", r"C:\Photos\boat.jpg"),
        ('"~/My Photos/boat.jpg"', "~/My Photos/boat.jpg"),
        ('"./a boat.webp"', "./a boat.webp"),
    ],
)
def test_image_paths(query: str, path: str) -> None:
    assert parse_query(query).terms == (Term("image", path),)


def test_text_plus_images_weighted_and_subtracted() -> None:
    parsed = parse_query('2:sunset + ./boat.jpg -0.5:"~/My Photos/crowd.png" photo:42')
    assert parsed.terms == (
        Term("text", "sunset", 2.0),
        Term("image", "./boat.jpg"),
        Term("image", "~/My Photos/crowd.png", -0.5),
        Term("photo", "42"),
    )
    assert parsed.weights == [2.0, 1.0, -0.5, 1.0]
    assert parsed.terms[3].photo_id == 42


def test_an_image_beside_words_is_its_own_term() -> None:
    assert parse_query("sunset ./boat.jpg at sea").terms == (
        Term("text", "sunset at sea"),
        Term("image", "./boat.jpg"),
    )


def test_library_photos_by_id() -> None:
    assert parse_query("photo:7 + photo:0012 -photo:3").terms == (
        Term("photo", "7"),
        Term("photo", "12"),
        Term("photo", "3", -1.0),
    )


def test_term_path(tmp_path: Path) -> None:
    assert Term("image", "~/x.jpg").path() == Path.home() / "x.jpg"
    assert Term("image", "./x.jpg").path(tmp_path) == tmp_path / "x.jpg"
    assert Term("image", "/abs/x.jpg").path(tmp_path) == Path("/abs/x.jpg")
    with pytest.raises(ValueError):
        Term("text", "x").path()
    with pytest.raises(ValueError):
        _ = Term("text", "x").photo_id


def test_only_subtracted_terms_is_an_error_that_says_how_to_quote() -> None:
    with pytest.raises(QueryError, match="quotes") as caught:
        parse_query("-people")
    assert isinstance(caught.value, ClipdeskError)
    assert caught.value.token == "-people"


def test_filters_cannot_be_subtracted_or_weighed() -> None:
    with pytest.raises(QueryError, match="subtract"):
        parse_query("beach -tag:family")
    with pytest.raises(QueryError, match="weigh"):
        parse_query("beach 2:in:Holidays")


# -- filters ---------------------------------------------------------------------------


def test_the_issue_example() -> None:
    parsed = parse_query("beach in:Holidays after:2023-07 before:2023-08 tag:family type:heic")
    assert parsed.terms == (Term("text", "beach"),)
    assert parsed.filters == Filters(
        folders=("Holidays",),
        after=date(2023, 7, 1),
        before=date(2023, 8, 1),
        tags=("family",),
        types=("heic",),
    )


def test_filters_anywhere_and_any_case() -> None:
    parsed = parse_query('IN:"Summer 2023" beach Tag:kids at night Orientation:Portrait')
    assert parsed.terms == (Term("text", "beach at night"),)
    assert parsed.filters == Filters(
        folders=("Summer 2023",), tags=("kids",), orientation="portrait"
    )


def test_repeated_filters() -> None:
    parsed = parse_query(
        "x in:A in:B in:A tag:a tag:b type:jpg type:jpeg type:png camera:X100 camera:R5 "
        "after:2020 after:2021-03 before:2024 before:2022 minpx:2M minpx:1000"
    )
    f = parsed.filters
    assert f.folders == ("A", "B")
    assert f.tags == ("a", "b")
    assert f.types == ("jpg", "png")
    assert f.cameras == ("X100", "R5")
    assert (f.after, f.before) == (date(2021, 3, 1), date(2022, 1, 1))
    assert f.min_pixels == 2_000_000


def test_a_query_of_filters_only() -> None:
    parsed = parse_query("in:Holidays after:2023")
    assert parsed.terms == ()
    assert parsed.filters == Filters(folders=("Holidays",), after=date(2023, 1, 1))
    assert parsed.text_for_display == ""


def test_types_and_their_suffixes() -> None:
    f = parse_query("x type:JPEG type:.tiff type:HEIF").filters
    assert f.types == ("jpg", "tif", "heic")
    assert f.suffixes() == {
        ".jpg",
        ".jpeg",
        ".jpe",
        ".jfif",
        ".tif",
        ".tiff",
        ".heic",
        ".heif",
        ".hif",
    }
    with pytest.raises(QueryError, match="pdf"):
        parse_query("x type:pdf")


@pytest.mark.parametrize(
    ("value", "pixels"),
    [("8000000", 8_000_000), ("8M", 8_000_000), ("12mp", 12_000_000), ("1.5M", 1_500_000),
     ("500k", 500_000), ("1920x1080", 2_073_600), ("1920X1080", 2_073_600)],
)  # fmt: skip
def test_min_pixels(value: str, pixels: int) -> None:
    assert parse_query(f"x minpx:{value}").filters.min_pixels == pixels


@pytest.mark.parametrize("value", ["0", "8G", "1920x", "0x100", "8 M"])
def test_bad_min_pixels(value: str) -> None:
    query = f'x minpx:"{value}"' if " " in value else f"x minpx:{value}"
    with pytest.raises(QueryError, match="minpx"):
        parse_query(query)


def test_orientations() -> None:
    for name in ("landscape", "portrait", "square"):
        assert parse_query(f"x orientation:{name}").filters.orientation == name
    with pytest.raises(QueryError, match="landscape, portrait or square"):
        parse_query("x orientation:diagonal")
    with pytest.raises(QueryError, match="both"):
        parse_query("x orientation:square orientation:portrait")
    assert orientation_of(4000, 3000) == "landscape"
    assert orientation_of(3000, 4000) == "portrait"
    assert orientation_of(3000, 3000) == "square"


# -- dates -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2023", date(2023, 1, 1)),
        ("2023-07", date(2023, 7, 1)),
        ("2023-7", date(2023, 7, 1)),
        ("2023-07-04", date(2023, 7, 4)),
        ("2023-7-4", date(2023, 7, 4)),
        ("2024-02-29", date(2024, 2, 29)),  # leap year
        ("2000-02-29", date(2000, 2, 29)),  # divisible by 400: leap
        ("2023-01-31", date(2023, 1, 31)),
        ("2023-04-30", date(2023, 4, 30)),
        ("2023-12-31", date(2023, 12, 31)),
        ("1850", date(1850, 1, 1)),
    ],
)
def test_dates(value: str, expected: date) -> None:
    assert parse_date(value, "after:" + value) == expected
    assert parse_query(f"x after:{value}").filters.after == expected
    assert parse_query(f"x before:{value}").filters.before == expected


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("2023-02-29", "February 2023 has 28 days"),
        ("1900-02-29", "February 1900 has 28 days"),  # divisible by 100: not leap
        ("2023-04-31", "April 2023 has 30 days"),
        ("2023-01-32", "January 2023 has 31 days"),
        ("2023-00", "no month 0"),
        ("2023-13", "no month 13"),
        ("0000", "no year 0"),
        ("23-07-01", "YYYY, YYYY-MM or YYYY-MM-DD"),
        ("2023/07/01", "YYYY, YYYY-MM or YYYY-MM-DD"),
        ("2023-07-01T10:00", "YYYY, YYYY-MM or YYYY-MM-DD"),
        ("20230701", "YYYY, YYYY-MM or YYYY-MM-DD"),
    ],
)
def test_bad_dates_say_why(value: str, why: str) -> None:
    with pytest.raises(QueryError, match=why) as caught:
        parse_query(f"beach after:{value}")
    assert caught.value.token == f"after:{value}"


def test_after_is_inclusive_before_exclusive() -> None:
    f = parse_query("x after:2023-07 before:2023-08").filters
    start, end = f.time_range()
    assert start == datetime(2023, 7, 1).timestamp()
    assert end == datetime(2023, 8, 1).timestamp()
    assert Filters().time_range() == (None, None)


def test_an_empty_date_range_is_an_error() -> None:
    with pytest.raises(QueryError, match="no date"):
        parse_query("x after:2023-07 before:2023-07")
    with pytest.raises(QueryError, match="no date"):
        parse_query("x before:2023 after:2024")


# -- the CLI's options -----------------------------------------------------------------


def test_cli_options_are_checked_like_the_text() -> None:
    f = filters_from_options(
        folders=["~/Pictures"], after="2023-07", before="2023-08", tags=["family"],
        types=["HEIC"], orientation="Square", cameras=["X100"], min_pixels="2M",
    )  # fmt: skip
    assert f == Filters(
        folders=("~/Pictures",), after=date(2023, 7, 1), before=date(2023, 8, 1),
        tags=("family",), types=("heic",), orientation="square", cameras=("X100",),
        min_pixels=2_000_000,
    )  # fmt: skip
    with pytest.raises(QueryError, match="--after 2023-13"):
        filters_from_options(after="2023-13")
    with pytest.raises(QueryError, match="--orientation wide"):
        filters_from_options(orientation="wide")


def test_options_and_text_filters_merge() -> None:
    text = parse_query("x in:A after:2020 tag:a orientation:square").filters
    options = filters_from_options(folders=["B"], after="2021", before="2022", tags=["b"])
    assert text.merged(options) == Filters(
        folders=("A", "B"), after=date(2021, 1, 1), before=date(2022, 1, 1),
        tags=("a", "b"), orientation="square",
    )  # fmt: skip
    with pytest.raises(QueryError, match="both"):
        text.merged(Filters(orientation="portrait"))


# -- writing back ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        "beach -people",
        "beach at night -people",
        "2:sunset + ./boat.jpg",
        "sunset + 2:calm sea",
        "-0.5:people + beach",
        '"-people"',
        '"~/My Photos/boat.jpg"',
        "photo:12 + 0.25:photo:3 -photo:4",
        'x in:"My Holidays" tag:family type:heic camera:"Canon EOS R5" orientation:landscape '
        "minpx:8M after:2023-07 before:2023-08-15",
    ],
)
def test_format_writes_the_canonical_text(query: str) -> None:
    assert format_query(parse_query(query)) == query


def test_format_quotes_what_would_read_differently() -> None:
    cases = {
        Term("text", "people at night", -1.0): '-"people at night"',
        Term("text", "30 seconds", 2.0): '2:"30 seconds"',
        Term("text", "in:Holidays"): '"in:Holidays"',
        Term("text", "5", -1.0): '-"5"',
        Term("text", "a + b"): '"a + b"',
    }
    for term, text in cases.items():
        parsed = ParsedQuery((Term("text", "x"), term)) if term.negative else ParsedQuery((term,))
        written = format_query(parsed)
        assert written.endswith(text)
        assert parse_query(written) == parsed


def test_format_refuses_what_no_text_can_say() -> None:
    with pytest.raises(ValueError):
        format_query(ParsedQuery((Term("text", 'say "hi" -there'),)))
    with pytest.raises(ValueError):
        format_query(ParsedQuery((Term("image", "boat"),)))
    with pytest.raises(ValueError):
        format_query(ParsedQuery(filters=Filters(tags=('a"b',))))


def test_chips_edit_the_filters_and_the_text_follows() -> None:
    parsed = parse_query("beach -people in:Holidays tag:family after:2023-07")
    without_tag = dataclasses.replace(parsed, filters=dataclasses.replace(parsed.filters, tags=()))
    text = format_query(without_tag)
    assert text == "beach -people in:Holidays after:2023-07"
    assert parse_query(text) == without_tag
    assert parsed.text_for_display == "beach -people"


_PIECES = [
    "beach", "at", "night", "-people", "2:sunset", "+", "+", "./boat.jpg", '"~/My Photos/x.jpg"',
    "photo:12", "-photo:3", "in:Holidays", 'in:"My Holidays"', "after:2023-07", "before:2024",
    "tag:family", "type:jpeg", "orientation:square", "camera:X100", "minpx:8M", "t-shirt",
    "10:30", "-0.5:dogs", '"new york"', "-", "C++", "+1", '-"red car"', "0.5:photo:3", "a",
    '12"', "http://x", "note:", "-5", ".25:~/y.png", "x-ray", '"-people"', "+",
]  # fmt: skip


def test_round_trip_on_random_queries() -> None:
    rng = random.Random(19)
    checked = 0
    for _ in range(1000):
        query = " ".join(rng.choice(_PIECES) for _ in range(rng.randint(1, 8)))
        try:
            parsed = parse_query(query)
        except QueryError:
            continue
        assert parse_query(format_query(parsed)) == parsed, query
        checked += 1
    assert checked > 600


def test_format_never_writes_a_wrong_text() -> None:
    # A stray quote at the start of a word ("abc) pairs with the next quote written after
    # it; where no order of the text avoids that, format_query says so instead.
    rng = random.Random(5)
    pieces = [*_PIECES, '"abc', 'x-"y', "\u201ccurly\u201d", "\u201d"]
    refused = 0
    for _ in range(1000):
        query = " ".join(rng.choice(pieces) for _ in range(rng.randint(1, 8)))
        try:
            parsed = parse_query(query)
        except QueryError:
            continue
        try:
            written = format_query(parsed)
        except ValueError:
            assert '"abc' in query or 'x-"y' in query, query
            refused += 1
            continue
        assert parse_query(written) == parsed, query
    assert refused < 40


# -- arithmetic ------------------------------------------------------------------------


def _reference(vectors: np.ndarray, weights: np.ndarray) -> np.ndarray:
    total = np.zeros(vectors.shape[1])
    for row, weight in zip(vectors, weights, strict=True):
        total += weight * row / np.sqrt(np.sum(row * row))
    unit: np.ndarray = total / np.sqrt(np.sum(total * total))
    return unit


def test_combine_matches_a_brute_force_reference() -> None:
    rng = np.random.default_rng(19)
    for _ in range(200):
        n, dim = int(rng.integers(1, 7)), int(rng.choice([8, 64, 512]))
        vectors = rng.normal(size=(n, dim)) * rng.uniform(0.1, 10, size=(n, 1))
        weights = rng.uniform(0.1, 3, size=n) * rng.choice([-1, 1], size=n)
        weights[0] = abs(weights[0]) + 1  # keep the sum away from cancelling out
        got = combine(vectors.astype(np.float32), weights.tolist())
        want = _reference(vectors.astype(np.float32).astype(np.float64), weights)
        assert got.dtype == np.float32
        assert got.shape == (dim,)
        np.testing.assert_allclose(got, want, atol=1e-6)
        assert abs(float(np.linalg.norm(got)) - 1) < 1e-6


def test_more_like_these_is_the_equal_weighted_mean_direction() -> None:
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(5, 32))
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    mean = unit.mean(axis=0)
    np.testing.assert_allclose(combine(vectors), mean / np.linalg.norm(mean), atol=1e-6)
    np.testing.assert_allclose(combine(vectors[0]), unit[0], atol=1e-6)  # one vector


def test_a_term_that_cancels_out_is_a_clear_error() -> None:
    a = np.random.default_rng(1).normal(size=16).astype(np.float32)
    with pytest.raises(QueryError, match="cancel"):
        combine([a, a * 3], [1.0, -1.0])  # "a -a": lengths do not matter
    with pytest.raises(QueryError, match="cancel"):
        combine([a, a], [2.0, -2.0])
    np.testing.assert_allclose(combine([a, a], [2.0, -1.0]), a / np.linalg.norm(a), atol=1e-6)


def test_combine_refuses_input_that_is_no_query() -> None:
    v = np.ones((2, 4), np.float32)
    with pytest.raises(ValueError):
        combine(v, [1.0])
    with pytest.raises(ValueError):
        combine(v, [1.0, 0.0])
    with pytest.raises(ValueError):
        combine(v, [1.0, float("nan")])
    with pytest.raises(ValueError):
        combine(np.zeros((1, 4)))
    with pytest.raises(ValueError):
        combine(np.zeros((0, 4)))
