"""Tags on subjects, studies and files (the filter language's PTAG, STAG and FTAG)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from enum import Enum

from sqlalchemy import SQLColumnExpression, delete, select
from sqlalchemy.orm import Session

from nifti_archive.db import rows_changed
from nifti_archive.errors import InvalidValue, NotFound
from nifti_archive.models import File, FileTag, Study, StudyTag, Subject, SubjectTag

TAG = re.compile(r"[\w.+-]{1,64}")
# Keeps IN lists under every driver's limit on bound parameters.
CHUNK = 500


TagModel = type[SubjectTag] | type[StudyTag] | type[FileTag]


class TagLevel(Enum):
    SUBJECT = "subject"
    STUDY = "study"
    FILE = "file"

    @property
    def model(self) -> TagModel:
        """The table of this level's tags."""
        models: dict[TagLevel, TagModel] = {TagLevel.SUBJECT: SubjectTag, TagLevel.STUDY: StudyTag, TagLevel.FILE: FileTag}
        return models[self]

    @property
    def owner(self) -> SQLColumnExpression[int]:
        """The column of that table naming what a tag is on."""
        # Typed as a column expression, not as the mapped attribute: that is a descriptor, and
        # mypy takes a property returning one for the int it yields on an instance.
        owners: dict[TagLevel, SQLColumnExpression[int]] = {
            TagLevel.SUBJECT: SubjectTag.subject_id, TagLevel.STUDY: StudyTag.study_id, TagLevel.FILE: FileTag.file_id,
        }
        return owners[self]

    def tag_row(self, owner_id: int, tag: str) -> SubjectTag | StudyTag | FileTag:
        """A new row tagging ``owner_id`` with ``tag``."""
        if self is TagLevel.SUBJECT:
            return SubjectTag(subject_id=owner_id, tag=tag)
        if self is TagLevel.STUDY:
            return StudyTag(study_id=owner_id, tag=tag)
        return FileTag(file_id=owner_id, tag=tag)


def check_tags(tags: Iterable[str]) -> list[str]:
    cleaned: list[str] = []
    for tag in tags:
        if not TAG.fullmatch(tag):
            raise InvalidValue(f"invalid tag {tag!r}: use up to 64 letters, digits, '.', '+', '-' or '_'")
        if tag not in cleaned:
            cleaned.append(tag)
    return cleaned


def split_tag_list(text: str) -> list[str]:
    """NORA's comma-separated tag lists (``t1,t2``)."""
    tags = check_tags(part.strip() for part in text.split(",") if part.strip())
    if not tags:
        raise InvalidValue(f"no tags in {text!r}")
    return tags


def _chunks(ids: Sequence[int]) -> Iterable[Sequence[int]]:
    for start in range(0, len(ids), CHUNK):
        yield ids[start : start + CHUNK]


def check_owners(session: Session, level: TagLevel, project_id: int, owner_ids: Sequence[int]) -> list[int]:
    """The ids, if every one names a live subject, study or file of the project; else NotFound."""
    wanted = set(owner_ids)
    if not wanted:
        raise InvalidValue(f"name at least one {level.value} to tag")
    query = {
        TagLevel.SUBJECT: select(Subject.id).where(Subject.trash_id.is_(None), Subject.id.in_(wanted)),
        TagLevel.STUDY: select(Study.id).join(Subject, Subject.id == Study.subject_id)
        .where(Study.trash_id.is_(None), Study.id.in_(wanted)),
        TagLevel.FILE: select(File.id).join(Study, Study.id == File.study_id).join(Subject, Subject.id == Study.subject_id)
        .where(File.trash_id.is_(None), File.id.in_(wanted)),
    }[level].where(Subject.project_id == project_id)
    missing = wanted - set(session.scalars(query))
    if missing:
        raise NotFound(f"no {level.value} with id {', '.join(map(str, sorted(missing)))} in this project")
    return sorted(wanted)


def add_tags(session: Session, level: TagLevel, owner_ids: Sequence[int], tags: Iterable[str]) -> int:
    """Tag every owner with every tag; returns how many tags were new."""
    tag_list = check_tags(tags)
    added = 0
    for chunk in _chunks(list(owner_ids)):
        present = set(
            session.execute(select(level.owner, level.model.tag).where(level.owner.in_(chunk), level.model.tag.in_(tag_list)))
        )
        rows = [(owner, tag) for owner in chunk for tag in tag_list if (owner, tag) not in present]
        session.add_all(level.tag_row(owner, tag) for owner, tag in rows)
        added += len(rows)
    session.flush()
    return added


def remove_tags(session: Session, level: TagLevel, owner_ids: Sequence[int], tags: Iterable[str]) -> int:
    tag_list = check_tags(tags)
    removed = 0
    for chunk in _chunks(list(owner_ids)):
        removed += rows_changed(
            session.execute(delete(level.model).where(level.owner.in_(chunk), level.model.tag.in_(tag_list)))
        )
    return removed
