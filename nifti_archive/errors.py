"""Errors a user can cause and fix. Each carries one line that says what is wrong.

The command line turns any of these into exit code 2 and the portal into a 4xx answer;
anything else that escapes is a bug.
"""

from __future__ import annotations

from enum import Enum
from typing import TypeVar

Member = TypeVar("Member", bound=Enum)


class ArchiveError(Exception):
    """Base class: the message is shown to the user as it is."""


class ConfigError(ArchiveError):
    pass


class NotFound(ArchiveError):
    pass


class Conflict(ArchiveError):
    pass


class Forbidden(ArchiveError):
    """The caller's role does not allow this (the portal answers 403)."""


class InvalidPath(ArchiveError):
    pass


class InvalidValue(ArchiveError):
    pass


def member_named(vocabulary: type[Member], text: str, what: str, field: str = "") -> Member:
    """The member of a closed vocabulary whose value is ``text``; InvalidValue naming the ones
    there are (and the request's ``field``, where one named it) otherwise."""
    try:
        return vocabulary(text)
    except ValueError:
        known = ", ".join(str(member.value) for member in vocabulary)
        raise InvalidValue(f"{field + ': ' if field else ''}unknown {what} {text!r}: use one of {known}") from None


class PatternError(ArchiveError):
    pass


class FilterSyntaxError(ArchiveError):
    """A filter bar that does not parse; ``position`` is the 0-based offset of the fault."""

    def __init__(self, message: str, position: int) -> None:
        super().__init__(f"{message} (at character {position + 1})")
        self.reason = message
        self.position = position
        # Which filter bar it came from, where a caller compiles several (the study table).
        self.column: str | None = None


class NotInitialised(ArchiveError):
    pass


class ServiceUnavailable(ArchiveError):
    """A service of the installation (the segmentation assistant) is down or not installed: 503."""
