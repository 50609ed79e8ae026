"""NORA's file patterns: a path below the study folder with two wildcards.

``*`` stands for any run of characters (including none, and including ``/``, as SQL LIKE's
``%`` does, which is what NORA's patterns always were) and ``_`` for exactly one character.
Every other character is literal; a backslash makes the next character literal too, so
``a\\_b`` matches only ``a_b``. Patterns compile to a LIKE pattern with ``\\`` as the escape
character (never into SQL text) and, for matching outside the database, to a regex with the
same meaning.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from .errors import PatternError

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

    @property
    def is_literal(self) -> bool:
        return all(isinstance(t, str) for t in self.tokens)

    def literal(self) -> str:
        """The path a wildcard-free pattern names."""
        if not self.is_literal:
            raise PatternError(f"pattern {self.text!r} has wildcards where a plain path is needed")
        return "".join(t for t in self.tokens if isinstance(t, str))

    def like(self, trailing_wildcard: bool = False) -> str:
        """The LIKE pattern, to be used with ``escape='\\'``."""
        out = []
        for token in self.tokens:
            if token is Piece.ANY:
                out.append("%")
            elif token is Piece.ONE:
                out.append("_")
            else:
                out.append(ESCAPE + token if token in "%_\\" else token)
        if trailing_wildcard:
            out.append("%")
        return "".join(out)

    def regex(self, trailing_wildcard: bool = False) -> re.Pattern[str]:
        out = []
        for token in self.tokens:
            if token is Piece.ANY:
                out.append(".*")
            elif token is Piece.ONE:
                out.append(".")
            else:
                out.append(re.escape(token))
        if trailing_wildcard:
            out.append(".*")
        return re.compile("".join(out), re.DOTALL)

    def matches(self, path: str, trailing_wildcard: bool = False) -> bool:
        return self.regex(trailing_wildcard).fullmatch(path) is not None


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
