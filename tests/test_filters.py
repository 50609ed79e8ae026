"""The filter-bar language, parsed without a database."""

from __future__ import annotations

import pytest

from nifti_archive.errors import FilterSyntaxError
from nifti_archive.query.filters import MAX_FILTER_LENGTH, Term, parse_filter


def groups(text: str) -> list[list[tuple[str | None, str]]]:
    parsed = parse_filter(text)
    assert parsed is not None
    return [[(t.attribute.value if t.attribute else None, t.value) for t in group] for group in parsed.groups]


def test_spaces_are_or_and_ampersand_is_and_binding_looser() -> None:
    assert groups("t1_trio*/s0*.nii MPR_t1*/s*.nii & STAG:control") == [
        [(None, "t1_trio*/s0*.nii"), (None, "MPR_t1*/s*.nii")],
        [("STAG", "control")],
    ]


def test_ampersand_needs_no_spaces() -> None:
    assert groups("a&b") == [[(None, "a")], [(None, "b")]]


def test_blank_bar_means_no_filter() -> None:
    assert parse_filter("") is None
    assert parse_filter("   \t ") is None


def test_all_attributes_case_insensitively() -> None:
    assert groups("stag:a PTAG:b Ftag:c SDESC:brain job:E") == [
        [("STAG", "a"), ("PTAG", "b"), ("FTAG", "c"), ("SDESC", "brain"), ("JOB", "e")]
    ]


def test_quotes_keep_spaces_ampersands_and_colons() -> None:
    assert groups('SDESC:"brain mri" "Tom & Jerry" "FOO:bar"') == [
        [("SDESC", "brain mri"), (None, "Tom & Jerry"), (None, "FOO:bar")]
    ]


def test_colon_after_something_that_is_not_a_word_is_plain_text() -> None:
    assert groups("12:30 a1:b") == [[(None, "12:30"), (None, "a1:b")]]


def test_unicode_terms() -> None:
    assert groups("Müller Ødegård & PTAG:kontrollgruppe") == [
        [(None, "Müller"), (None, "Ødegård")],
        [("PTAG", "kontrollgruppe")],
    ]


def test_positions_point_at_the_term() -> None:
    parsed = parse_filter("abc  STAG:x")
    assert parsed is not None
    assert [t.position for t in parsed.terms()] == [0, 5]


@pytest.mark.parametrize(
    ("text", "message", "position"),
    [
        ("&", "'&' at the start", 0),
        ("a & & b", "after another '&'", 4),
        ("a &", "'&' at the end", 2),
        ("& a", "'&' at the start", 0),
        ("FOO:x", "unknown attribute FOO:", 0),
        ("a STAG:", "STAG: needs a value", 2),
        ("JOB:x", "not a job state", 0),
        ('SDESC:"brain', "unterminated quote", 6),
        ("a\\", "lone backslash", 0),
        ('""', "empty term", 0),
    ],
)
def test_malformed_filters_say_what_and_where(text: str, message: str, position: int) -> None:
    with pytest.raises(FilterSyntaxError, match=message) as info:
        parse_filter(text)
    assert info.value.position == position


def test_very_long_input_is_refused() -> None:
    with pytest.raises(FilterSyntaxError, match="limit"):
        parse_filter("a " * (MAX_FILTER_LENGTH // 2 + 1))
    with pytest.raises(FilterSyntaxError, match="more than 200 terms"):
        parse_filter(" ".join(["a"] * 201))


def test_underscore_and_percent_survive_to_the_pattern() -> None:
    parsed = parse_filter("50%_done")
    assert parsed is not None
    term: Term = parsed.terms()[0]
    assert term.attribute is None
    assert term.pattern().like(trailing_wildcard=True) == "50\\%_done%"
