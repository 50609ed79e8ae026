"""BIDS names: labels, file names and where a file goes in the dataset."""

from __future__ import annotations

import re
from collections.abc import Mapping

from nifti_archive.bids.vocabulary import DATATYPE_OF, Entity, Suffix
from nifti_archive.ingest.pseudonyms import PREFIX as PSEUDONYM_PREFIX

_NOT_LABEL = re.compile(r"[^A-Za-z0-9]")


def label(text: str) -> str:
    """A BIDS label: the letters and digits of ``text``."""
    return _NOT_LABEL.sub("", text)


def subject_label(folder: str) -> str:
    """A subject's label from its archive folder; a pseudonym's own ``sub-`` is not repeated."""
    return label(folder.removeprefix(PSEUDONYM_PREFIX))


def file_stem(subject: str, session: str, suffix: Suffix, entities: Mapping[Entity, str]) -> str:
    """``sub-…_ses-…_<entities in BIDS order>_<suffix>``, relative to the dataset."""
    parts = [f"sub-{subject}", f"ses-{session}"]
    parts += [f"{entity.value}-{entities[entity]}" for entity in Entity if entity in entities]
    name = "_".join([*parts, suffix.value])
    return f"sub-{subject}/ses-{session}/{DATATYPE_OF[suffix].value}/{name}"
