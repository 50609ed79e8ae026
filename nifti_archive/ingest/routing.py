"""Which project a series goes to: the called AET first, then tag rules, else the inbox.

A rule may name the senders it accepts; it then matches only a series whose every instance
came from one of them. A rule without senders accepts any sender that knows its AET or tags.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from nifti_archive.errors import InvalidValue

INBOX = "inbox"
AET = re.compile(r"[\x20-\x7e]{1,16}")


@dataclass(frozen=True)
class Origin:
    """Where an instance came from: the calling AET and the address Orthanc recorded."""

    aet: str
    host: str

    def __post_init__(self) -> None:
        # Orthanc takes AETs without regard to case or padding: so does the comparison.
        object.__setattr__(self, "aet", self.aet.strip().upper())


@dataclass(frozen=True)
class Rule:
    project: str
    called_aet: str | None = None
    tag: str | None = None
    pattern: str | None = None
    senders: frozenset[Origin] = field(default_factory=frozenset)

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

    def accepts(self, origins: frozenset[Origin]) -> bool:
        return not self.senders or (bool(origins) and origins <= self.senders)

    def matches(self, called_aet: str, tags: Mapping[str, str], origins: frozenset[Origin] = frozenset()) -> bool:
        if not self.accepts(origins):
            return False
        if self.called_aet is not None:
            return self.called_aet.strip() == called_aet.strip()
        assert self.tag is not None and self.pattern is not None
        return re.search(self.pattern, str(tags.get(self.tag, "") or "")) is not None


def route(rules: Sequence[Rule], called_aet: str, tags: Mapping[str, str], origins: frozenset[Origin] = frozenset()) -> str:
    """The project for a series. AET rules outrank tag rules; among each, the first match wins."""
    for rule in [r for r in rules if r.called_aet is not None] + [r for r in rules if r.tag is not None]:
        if rule.matches(called_aet, tags, origins):
            return rule.project
    return INBOX
