"""File patterns: NORA's '*' and '_' wildcards, literal everything else, safe LIKE translation."""

from __future__ import annotations

import sqlite3

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nifti_archive.errors import PatternError
from nifti_archive.query.patterns import parse_file_pattern, parse_value_pattern


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("t1*/s0__.nii", "t1_mprage/s003.nii", True),
        ("t1*/s0__.nii", "t1/s01.nii", False),  # '_' is exactly one character, twice
        ("t1*/s0__.nii", "t1_mprage/s003.nii.gz", False),  # no implicit trailing wildcard in a pattern
        ("t1*/s0__.nii", "T1_mprage/s003.nii", False),  # case matters, as on the file system
        ("*flair*", "004_flair/s004.nii", True),
        ("*", "anything/at/all.nii", True),  # '*' crosses folders, as LIKE's '%' does
        ("100%/a.nii", "100%/a.nii", True),
        ("100%/a.nii", "100abc/a.nii", False),  # '%' is literal
        ("a\\_b.nii", "a_b.nii", True),
        ("a\\_b.nii", "axb.nii", False),  # an escaped '_' is literal
        ("a\\*.nii", "a*.nii", True),
        ("a\\*.nii", "abc.nii", False),
        ("dir\\\\x", "dir\\x", True),  # a literal backslash
        ("héllo*/ü_.nii", "héllo wörld/üx.nii", True),
        ("a.nii", "aXnii", False),  # '.' is no wildcard
    ],
)
def test_matching(pattern: str, path: str, expected: bool) -> None:
    assert parse_file_pattern(pattern).matches(path) is expected


def test_like_translation_escapes_sql_metacharacters() -> None:
    assert parse_file_pattern("t1*/s0__.nii").like() == "t1%/s0__.nii"
    assert parse_file_pattern("100%/a\\_b").like() == "100\\%/a\\_b"
    assert parse_file_pattern("x'; DROP TABLE files; --").like() == "x'; DROP TABLE files; --"
    assert parse_value_pattern("A").like(trailing_wildcard=True) == "A%"


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("", "empty file pattern"),
        ("/etc/passwd", "absolute"),
        ("../other/s.nii", "'..'"),
        ("t1/../../x", "'..'"),
        ("a\\", "lone backslash"),
        ("a\x00b", "control character"),
        ("x" * 1025, "limit is 1024"),
    ],
)
def test_bad_patterns_are_refused_with_a_reason(pattern: str, message: str) -> None:
    with pytest.raises(PatternError, match=message):
        parse_file_pattern(pattern)


def test_dots_inside_names_are_fine() -> None:
    assert parse_file_pattern("a..b/c.nii").matches("a..b/c.nii")


_alphabet = st.sampled_from(list("ab_%*\\/.xé"))


@settings(max_examples=400, deadline=None)
@given(pattern=st.text(_alphabet, min_size=1, max_size=8), path=st.text(st.sampled_from(list("ab_%*\\/.xé")), max_size=8))
def test_sql_like_and_regex_agree(pattern: str, path: str) -> None:
    """The LIKE pattern the database runs means what the pattern means (checked on SQLite)."""
    try:
        parsed = parse_value_pattern(pattern)
    except PatternError:
        return
    connection = sqlite3.connect(":memory:")
    connection.execute("PRAGMA case_sensitive_like=ON")
    for trailing in (False, True):
        (in_sql,) = connection.execute("SELECT ? LIKE ? ESCAPE '\\'", (path, parsed.like(trailing))).fetchone()
        assert bool(in_sql) == parsed.matches(path, trailing), (pattern, path, trailing)
