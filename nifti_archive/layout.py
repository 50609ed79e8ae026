"""The archive on disk: ``<root>/<project>/<subject>/<study>/<series folder>/<file>``.

Names that become folders are checked here, once, so that no id can climb out of the
archive or hide among the archive's own folders (those start with a dot, like ``.trash``).

A project's analyses (results spanning studies: a trained model, a group statistic) are
subjects named ``ANALYSIS#<name>``. The ``#`` keeps them apart from every subject DICOM,
an import or a drop folder can name: those ids are folder ids, which never hold one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from nifti_archive.errors import InvalidPath

PROJECT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
# Subject and study ids: letters of any script, digits and a few separators; no slash, no
# leading dot, no white space, so that every id is also a safe folder name.
FOLDER_ID = re.compile(r"[^\W_][\w.+-]{0,127}")
TRASH_FOLDER = ".trash"
MAX_RELATIVE_PATH = 1024
ANALYSIS_PREFIX = "ANALYSIS#"
# An analysis is a subject with this one study, so that files, tags and the trash treat it as any study.
ANALYSIS_STUDY = "analysis"
MAX_ANALYSIS_NAME = 64
_ANALYSIS_CHARACTERS = re.compile(r"[A-Za-z0-9._+-]+")


def check_project_name(name: str) -> str:
    if not PROJECT_NAME.fullmatch(name):
        raise InvalidPath(
            f"invalid project name {name!r}: use up to 64 letters, digits, '-' or '_', starting with a letter or digit"
        )
    return name


def analysis_name_problem(name: str) -> str | None:
    """Why ``name`` cannot name an analysis, or None when it can."""
    if not name:
        return "it is empty"
    if len(name) > MAX_ANALYSIS_NAME:
        return f"it is longer than {MAX_ANALYSIS_NAME} characters"
    if "/" in name or "\\" in name:
        return "it contains a path separator"
    if ".." in name:
        return "it contains '..'"
    if name.startswith("."):
        return "names starting with '.' are reserved for the archive"
    if any(c.isspace() for c in name):
        return "it contains white space"
    if not _ANALYSIS_CHARACTERS.fullmatch(name):
        return "use only letters A-Z and a-z, digits, '.', '_', '+' or '-'"
    return None


def check_folder_id(kind: str, value: str) -> str:
    """A subject or study id that DICOM, an import or a drop folder may name: never an analysis."""
    if kind == "subject" and value.upper().startswith(ANALYSIS_PREFIX):
        raise InvalidPath(
            f"invalid subject id {value!r}: {ANALYSIS_PREFIX}... names a project analysis, which holds no DICOM "
            "and is made only by creating the analysis"
        )
    if not FOLDER_ID.fullmatch(value):
        raise InvalidPath(
            f"invalid {kind} id {value!r}: use up to 128 letters, digits, '.', '+', '-' or '_', "
            "starting with a letter or digit"
        )
    return value


def check_subject_folder(value: str) -> str:
    """A subject id as the archive holds it: a folder id, or an analysis's ``ANALYSIS#<name>``."""
    if not value.startswith(ANALYSIS_PREFIX):
        return check_folder_id("subject", value)
    problem = analysis_name_problem(value[len(ANALYSIS_PREFIX):])
    if problem is not None:
        raise InvalidPath(f"invalid analysis folder {value!r}: {problem}")
    return value


def split_psid(psid: str) -> tuple[str, str | None]:
    """NORA's ``SUBJECT`` or ``SUBJECT#STUDY`` as (subject, study or None); an analysis's own ``#``
    belongs to its subject id (``ANALYSIS#name#analysis``)."""
    skip = len(ANALYSIS_PREFIX) if psid.startswith(ANALYSIS_PREFIX) else 0
    subject, separator, study = psid[skip:].partition("#")
    return psid[:skip] + subject, study if separator else None


def check_relative_path(path: str) -> str:
    """A file's path below its study folder: relative, '/'-separated, no '.', '..' or empty parts."""
    if not path or len(path) > MAX_RELATIVE_PATH:
        raise InvalidPath(f"invalid file path {path!r}: empty or longer than {MAX_RELATIVE_PATH} characters")
    parts = path.split("/")
    if path.startswith("/") or any(part in ("", ".", "..") for part in parts):
        raise InvalidPath(f"invalid file path {path!r}: it must be relative, without '.', '..' or empty parts")
    if any(part.startswith(".") for part in parts):
        raise InvalidPath(f"invalid file path {path!r}: names starting with '.' are reserved for the archive")
    if any(ord(c) < 32 for c in path):
        raise InvalidPath(f"invalid file path {path!r}: control characters")
    return path


@dataclass(frozen=True)
class Location:
    """Where a file lies in the archive, by ids rather than by path."""

    project: str
    subject: str
    study: str
    path: str

    @property
    def psid(self) -> str:
        return f"{self.subject}#{self.study}"


@dataclass(frozen=True)
class ArchiveLayout:
    root: Path

    def project_dir(self, project: str) -> Path:
        return self.root / check_project_name(project)

    def subject_dir(self, project: str, subject: str) -> Path:
        return self.project_dir(project) / check_subject_folder(subject)

    def study_dir(self, project: str, subject: str, study: str) -> Path:
        return self.subject_dir(project, subject) / check_folder_id("study", study)

    def file_path(self, location: Location) -> Path:
        study_dir = self.study_dir(location.project, location.subject, location.study)
        return study_dir / check_relative_path(location.path)

    def trash_dir(self, project: str, trash_id: int) -> Path:
        return self.project_dir(project) / TRASH_FOLDER / str(trash_id)

    def in_trash(self, trash_id: int, location: Location) -> Path:
        """Where a file of ``location`` lies while in trash entry ``trash_id``."""
        return self.trash_dir(location.project, trash_id) / location.subject / location.study / location.path

    def locate(self, path: Path) -> Location:
        """The ids a path in the archive stands for; refuses paths outside it or above a study."""
        absolute = Path(path).expanduser().absolute()
        resolved_root = self.root.resolve()
        try:
            relative = PurePosixPath(absolute.resolve().relative_to(resolved_root))
        except ValueError:
            raise InvalidPath(f"{path} is outside the archive root {self.root}") from None
        parts = relative.parts
        if len(parts) < 4:
            raise InvalidPath(
                f"{path} is not a file inside a study folder (<root>/<project>/<subject>/<study>/...)"
            )
        project, subject, study = parts[0], parts[1], parts[2]
        check_project_name(project)
        check_subject_folder(subject)
        check_folder_id("study", study)
        if subject.startswith(ANALYSIS_PREFIX) and study != ANALYSIS_STUDY:
            raise InvalidPath(f"{path} is not in an analysis's folder: its files lie in {subject}/{ANALYSIS_STUDY}/")
        return Location(project, subject, study, check_relative_path("/".join(parts[3:])))
