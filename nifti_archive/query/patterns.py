"""NORA's file patterns: a path below the study folder with two wildcards.

``*`` stands for any run of characters (including none, and including ``/``, as SQL LIKE's
``%`` does, which is what NORA's patterns always were) and ``_`` for exactly one character.
Every other character is literal; a backslash makes the next character literal too, so
``a\\_b`` matches only ``a_b``. Patterns compile to a LIKE pattern with ``\\`` as the escape
character (never into SQL text) and, for matching outside the database, to a regex with the
same meaning.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from nifti_archive.errors import PatternError

ESCAPE = "\\"
MAX_PATTERN_LENGTH = 1024


class Piece(Enum):
    ANY = "*"
    ONE = "_"


Token = Piece | str


@dataclass(frozen=True)
class FilePattern:
    """A parsed pattern: literal characters and wildcards in order."""

    text: str
    tokens: tuple[Token, ...]

    def _render(self, any_run: str, one: str, literal: Callable[[str], str], trailing_wildcard: bool) -> str:
        out = [any_run if t is Piece.ANY else one if t is Piece.ONE else literal(t) for t in self.tokens]
        return "".join(out) + (any_run if trailing_wildcard else "")

    def like(self, trailing_wildcard: bool = False) -> str:
        """The LIKE pattern, to be used with ``escape='\\'``."""
        return self._render("%", "_", lambda c: ESCAPE + c if c in "%_\\" else c, trailing_wildcard)

    def regex(self, trailing_wildcard: bool = False) -> re.Pattern[str]:
        return _compiled(self, trailing_wildcard)

    def matches(self, path: str, trailing_wildcard: bool = False) -> bool:
        return self.regex(trailing_wildcard).fullmatch(path) is not None


# A batch's validation matches the same few patterns against every study's files: compiled once.
@functools.lru_cache(maxsize=1024)
def _compiled(pattern: FilePattern, trailing_wildcard: bool) -> re.Pattern[str]:
    return re.compile(pattern._render(".*", ".", re.escape, trailing_wildcard), re.DOTALL)


def tokenize(text: str) -> tuple[Token, ...]:
    tokens: list[Token] = []
    chars = iter(enumerate(text))
    for index, char in chars:
        if char == ESCAPE:
            escaped = next(chars, None)
            if escaped is None:
                raise PatternError(f"pattern {text!r} ends with a lone backslash (at character {index + 1})")
            tokens.append(escaped[1])
        elif char == "*":
            tokens.append(Piece.ANY)
        elif char == "_":
            tokens.append(Piece.ONE)
        else:
            tokens.append(char)
    return tuple(tokens)


def _check_text(text: str, what: str) -> None:
    if not text:
        raise PatternError(f"empty {what}")
    if len(text) > MAX_PATTERN_LENGTH:
        raise PatternError(f"{what} is {len(text)} characters long; the limit is {MAX_PATTERN_LENGTH}")
    bad = next((c for c in text if ord(c) < 32 or ord(c) == 127), None)
    if bad is not None:
        raise PatternError(f"{what} {text!r} contains the control character {bad!r}")


@functools.lru_cache(maxsize=1024)
def parse_file_pattern(text: str) -> FilePattern:
    """Parse a pattern that names files below a study folder.

    Absolute paths and ``..`` are refused: a pattern can only ever look inside a study.
    """
    _check_text(text, "file pattern")
    if text.startswith("/"):
        raise PatternError(f"file pattern {text!r} is absolute; give a path below the study folder")
    if any(segment == ".." for segment in text.split("/")):
        raise PatternError(f"file pattern {text!r} contains '..'; patterns cannot leave the study folder")
    return FilePattern(text, tokenize(text))


def parse_value_pattern(text: str) -> FilePattern:
    """Parse a pattern matched against a value (an id, a tag, a description), not a path."""
    _check_text(text, "search term")
    return FilePattern(text, tokenize(text))
