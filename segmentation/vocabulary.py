"""The names by which the command line and the REST API ask for ROI operations and consensus
methods: apart from the code that carries them out (scipy), so that parsing a request needs none of it."""

from __future__ import annotations

from enum import Enum

from nifti_archive.errors import member_named


class Operation(Enum):
    """The operations on ROIs, by the names the command line and the REST API use."""

    ERODE = "erode"
    DILATE = "dilate"
    OPEN = "open"
    CLOSE = "close"
    UNION = "union"
    INTERSECTION = "intersection"
    DIFFERENCE = "difference"
    REMOVE_SALT = "remove_salt"

    @classmethod
    def named(cls, name: str) -> Operation:
        return member_named(cls, name, "ROI operation")

    @property
    def takes_two(self) -> bool:
        """Whether the operation combines the ROI with a second one."""
        return self in (Operation.UNION, Operation.INTERSECTION, Operation.DIFFERENCE)


class ConsensusMethod(Enum):
    MAJORITY = "majority"
    STAPLE = "staple"

    @classmethod
    def named(cls, text: str) -> ConsensusMethod:
        return member_named(cls, text, "consensus method")
