"""The part of BIDS the export writes: datatypes, suffixes and entities, and which go together."""

from __future__ import annotations

from enum import Enum


class Datatype(Enum):
    ANAT = "anat"
    FUNC = "func"
    DWI = "dwi"
    FMAP = "fmap"


class Entity(Enum):
    """Entities a rule may set, in the order BIDS puts them in a file name (after sub and ses)."""

    TASK = "task"
    ACQ = "acq"
    CE = "ce"
    REC = "rec"
    DIR = "dir"
    RUN = "run"
    ECHO = "echo"
    # mag or phase: the two images of a complex-valued series (BIDS 1.8 prefers it to a phase suffix).
    PART = "part"


class Suffix(Enum):
    T1W = "T1w"
    T2W = "T2w"
    FLAIR = "FLAIR"
    PDW = "PDw"
    T2STARW = "T2starw"
    BOLD = "bold"
    SBREF = "sbref"
    DWI = "dwi"
    EPI = "epi"
    PHASEDIFF = "phasediff"
    MAGNITUDE1 = "magnitude1"
    MAGNITUDE2 = "magnitude2"


_ANAT = (Suffix.T1W, Suffix.T2W, Suffix.FLAIR, Suffix.PDW, Suffix.T2STARW)
DATATYPE_OF: dict[Suffix, Datatype] = {
    **{suffix: Datatype.ANAT for suffix in _ANAT},
    Suffix.BOLD: Datatype.FUNC,
    Suffix.SBREF: Datatype.FUNC,
    Suffix.DWI: Datatype.DWI,
    Suffix.EPI: Datatype.FMAP,
    Suffix.PHASEDIFF: Datatype.FMAP,
    Suffix.MAGNITUDE1: Datatype.FMAP,
    Suffix.MAGNITUDE2: Datatype.FMAP,
}

_ANAT_ENTITIES = frozenset({Entity.ACQ, Entity.CE, Entity.REC, Entity.RUN, Entity.ECHO, Entity.PART})
_FUNC_ENTITIES = frozenset({Entity.TASK, Entity.ACQ, Entity.CE, Entity.REC, Entity.DIR, Entity.RUN, Entity.ECHO, Entity.PART})
_FIELDMAP_ENTITIES = frozenset({Entity.ACQ, Entity.RUN})
ALLOWED: dict[Suffix, frozenset[Entity]] = {
    **{suffix: _ANAT_ENTITIES for suffix in _ANAT},
    Suffix.BOLD: _FUNC_ENTITIES,
    Suffix.SBREF: _FUNC_ENTITIES,
    Suffix.DWI: frozenset({Entity.ACQ, Entity.REC, Entity.DIR, Entity.RUN}),
    Suffix.EPI: frozenset({Entity.ACQ, Entity.CE, Entity.DIR, Entity.RUN}),
    Suffix.PHASEDIFF: _FIELDMAP_ENTITIES,
    Suffix.MAGNITUDE1: _FIELDMAP_ENTITIES,
    Suffix.MAGNITUDE2: _FIELDMAP_ENTITIES,
}
REQUIRED: dict[Suffix, frozenset[Entity]] = {
    Suffix.BOLD: frozenset({Entity.TASK}),
    Suffix.SBREF: frozenset({Entity.TASK}),
    Suffix.EPI: frozenset({Entity.DIR}),
}
# Files BIDS requires beside the image, by suffix.
COMPANIONS: dict[Suffix, tuple[str, ...]] = {Suffix.DWI: (".bval", ".bvec")}
