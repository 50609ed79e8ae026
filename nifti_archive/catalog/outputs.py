"""Output locations from patterns (NORA's ``--out`` and ``--pathout``).

A pattern here starts with the subject and the study, ``SUBJECT/STUDY/folder/file``.
Wildcards in the subject, the study and the folders are resolved against what the archive
holds and must name exactly one thing. A folder part without ``*`` that matches nothing is a
new folder, taken as written (``_`` is common in folder names); the file name of ``--out`` is
always taken as written, since it names something that does not exist yet.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from sqlalchemy import select
from sqlalchemy.orm import Session

from nifti_archive.errors import InvalidValue, NotFound, PatternError
from nifti_archive.layout import ArchiveLayout, Location, check_relative_path
from nifti_archive.models import File, Project
from nifti_archive.query.patterns import FilePattern, Piece, parse_file_pattern
from nifti_archive.query.selection import studies_by_name


def _one(matches: list[str], what: str, pattern: str) -> str:
    if not matches:
        raise NotFound(f"no {what} matches {pattern!r}")
    if len(matches) > 1:
        shown = ", ".join(matches[:5]) + (" ..." if len(matches) > 5 else "")
        raise InvalidValue(f"{pattern!r} matches {len(matches)} of them ({shown}); it must name one {what}")
    return matches[0]


def _resolve_study(session: Session, project: Project, subject_text: str, study_text: str) -> tuple[str, str, int]:
    rows = session.execute(studies_by_name(project.id, subject_text, study_text)).all()
    by_psid = {f"{subject}#{study}": (subject, study, pk) for pk, subject, study in rows}
    return by_psid[_one(list(by_psid), "study", f"{subject_text}/{study_text}")]


def _resolve_folder(session: Session, study_pk: int, folder: FilePattern) -> str:
    paths = session.scalars(select(File.path).where(File.study_id == study_pk, File.trash_id.is_(None)))
    folders = sorted({str(parent) for p in paths for parent in PurePosixPath(p).parents if str(parent) != "."})
    matches = [f for f in folders if folder.matches(f)]
    if not matches and Piece.ANY not in folder.tokens:
        return folder.text
    return _one(matches, "folder", folder.text)


def output_path(
    session: Session, layout: ArchiveLayout, project: Project, pattern: str, is_folder: bool
) -> Path:
    parse_file_pattern(pattern)
    parts = pattern.rstrip("/").split("/")
    if len(parts) < 3:
        raise PatternError(f"output pattern {pattern!r} must start with SUBJECT/STUDY/ and name something below it")
    subject, study, study_pk = _resolve_study(session, project, parts[0], parts[1])
    below = parts[2:] if is_folder else parts[2:-1]
    name = "" if is_folder else parts[-1]
    folder = _resolve_folder(session, study_pk, parse_file_pattern("/".join(below))) if below else ""
    relative = "/".join(p for p in (folder, name) if p)
    location = Location(project.name, subject, study, check_relative_path(relative))
    return layout.file_path(location)
