"""NORA's filter bars, parsed into a small syntax tree (no SQL here; see filter_sql).

Grammar, as NORA users know it:

* terms separated by white space are alternatives (OR);
* ``&`` joins groups that must all hold (AND), and binds looser than the space, so
  ``t1*/s0*.nii MPR*/s*.nii & STAG:control`` is (t1 OR MPR) AND STAG:control;
* every term is a pattern (``*`` and ``_`` wildcards) with an implicit trailing wildcard;
* ``ATTR:value`` searches an attribute instead of the bar's own column: STAG (study tags),
  PTAG (subject tags), FTAG (file tags), SDESC (study description) and JOB (a job state:
  q queued, r running, e error, d done);
* double quotes keep white space, ``&`` and a leading ``WORD:`` inside one literal term.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from nifti_archive.errors import FilterSyntaxError, PatternError
from nifti_archive.query.patterns import FilePattern, parse_value_pattern

MAX_FILTER_LENGTH = 4000
MAX_TERMS = 200


class Attribute(Enum):
    STAG = "STAG"
    PTAG = "PTAG"
    FTAG = "FTAG"
    JOB = "JOB"
    SDESC = "SDESC"


JOB_CODES = {"q": "queued", "r": "running", "e": "error", "d": "done"}


@dataclass(frozen=True)
class Term:
    """One search term. ``attribute`` is None for a term on the bar's own column."""

    value: str
    attribute: Attribute | None
    position: int

    def pattern(self) -> FilePattern:
        try:
            return parse_value_pattern(self.value)
        except PatternError as exc:
            raise FilterSyntaxError(str(exc), self.position) from exc


@dataclass(frozen=True)
class Filter:
    """A conjunction of groups, each group a disjunction of terms."""

    groups: tuple[tuple[Term, ...], ...]

    def terms(self) -> list[Term]:
        return [term for group in self.groups for term in group]


@dataclass(frozen=True)
class _Token:
    raw: str
    value: str
    position: int
    # Offset of the first colon that stood outside quotes, or -1: only such a colon makes an attribute.
    bare_colon: int

    @property
    def is_and(self) -> bool:
        return self.raw == "&"


_ATTRIBUTE_NAME = re.compile(r"[A-Za-z]+")


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i = 0
    n = len(text)
    while i < n:
        char = text[i]
        if char.isspace():
            i += 1
            continue
        if char == "&":
            tokens.append(_Token("&", "&", i, -1))
            i += 1
            continue
        start = i
        value: list[str] = []
        bare_colon = -1
        quote_start = -1
        while i < n and (quote_start >= 0 or not (text[i].isspace() or text[i] == "&")):
            char = text[i]
            if char == '"':
                quote_start = i if quote_start < 0 else -1
            elif char == "\\" and i + 1 < n:
                # Keep the backslash for the pattern layer unless it only protects a quote.
                nxt = text[i + 1]
                value.append(nxt if nxt == '"' else char + nxt)
                i += 1
            else:
                if char == ":" and quote_start < 0 and bare_colon < 0:
                    bare_colon = len(value)
                value.append(char)
            i += 1
        if quote_start >= 0:
            raise FilterSyntaxError("unterminated quote", quote_start)
        tokens.append(_Token(text[start:i], "".join(value), start, bare_colon))
    return tokens


def _term(token: _Token) -> Term:
    if token.bare_colon > 0:
        name = token.value[: token.bare_colon]
        if _ATTRIBUTE_NAME.fullmatch(name):
            try:
                attribute = Attribute(name.upper())
            except ValueError:
                known = ", ".join(a.value + ":" for a in Attribute)
                raise FilterSyntaxError(
                    f"unknown attribute {name}: (known: {known}; put the term in quotes to search for it literally)",
                    token.position,
                ) from None
            value = token.value[token.bare_colon + 1 :]
            if not value:
                raise FilterSyntaxError(f"{attribute.value}: needs a value", token.position)
            if attribute is Attribute.JOB and value.lower() not in JOB_CODES:
                codes = ", ".join(f"{k} ({v})" for k, v in JOB_CODES.items())
                raise FilterSyntaxError(f"JOB:{value} is not a job state; use one of {codes}", token.position)
            return Term(value.lower() if attribute is Attribute.JOB else value, attribute, token.position)
    if not token.value:
        raise FilterSyntaxError("empty term", token.position)
    return Term(token.value, None, token.position)


def parse_filter(text: str) -> Filter | None:
    """Parse one filter bar; None when the bar is blank (no restriction)."""
    if len(text) > MAX_FILTER_LENGTH:
        raise FilterSyntaxError(f"filter is {len(text)} characters long; the limit is {MAX_FILTER_LENGTH}", 0)
    control = next((i for i, c in enumerate(text) if ord(c) < 32 and not c.isspace()), None)
    if control is not None:
        raise FilterSyntaxError("control character in filter", control)
    tokens = _tokenize(text)
    if not tokens:
        return None
    groups: list[tuple[Term, ...]] = []
    current: list[Term] = []
    for token in tokens:
        if token.is_and:
            if not current:
                where = "at the start" if not groups else "after another '&'"
                raise FilterSyntaxError(f"'&' {where}: it must stand between two terms", token.position)
            groups.append(tuple(current))
            current = []
        else:
            current.append(_term(token))
    if not current:
        raise FilterSyntaxError("'&' at the end: it must stand between two terms", tokens[-1].position)
    groups.append(tuple(current))
    parsed = Filter(tuple(groups))
    if len(parsed.terms()) > MAX_TERMS:
        raise FilterSyntaxError(f"more than {MAX_TERMS} terms", 0)
    for term in parsed.terms():
        term.pattern()
    return parsed
