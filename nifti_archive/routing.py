"""Which project a series goes to: the called AET first, then tag rules, else the inbox."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .errors import InvalidValue

INBOX = "inbox"
AET = re.compile(r"[\x20-\x7e]{1,16}")


@dataclass(frozen=True)
class Rule:
    project: str
    called_aet: str | None = None
    tag: str | None = None
    pattern: str | None = None

    def __post_init__(self) -> None:
        if (self.called_aet is None) == (self.tag is None):
            raise InvalidValue("a routing rule names either a called AET or a tag with a pattern")
        if self.called_aet is not None and (not AET.fullmatch(self.called_aet) or "\\" in self.called_aet):
            raise InvalidValue(f"invalid AET {self.called_aet!r}: 1 to 16 printable characters, no backslash")
        if self.tag is not None:
            if not self.pattern:
                raise InvalidValue(f"the rule on {self.tag} needs a pattern")
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise InvalidValue(f"invalid pattern {self.pattern!r}: {exc}") from exc

    def matches(self, called_aet: str, tags: Mapping[str, str]) -> bool:
        if self.called_aet is not None:
            return self.called_aet.strip() == called_aet.strip()
        assert self.tag is not None and self.pattern is not None
        return re.search(self.pattern, str(tags.get(self.tag, "") or "")) is not None


def route(rules: Sequence[Rule], called_aet: str, tags: Mapping[str, str]) -> str:
    """The project for a series. AET rules outrank tag rules; among each, the first match wins."""
    for rule in [r for r in rules if r.called_aet is not None] + [r for r in rules if r.tag is not None]:
        if rule.matches(called_aet, tags):
            return rule.project
    return INBOX
