"""The archive on disk: ``<root>/<project>/<subject>/<study>/<series folder>/<file>``.

Names that become folders are checked here, once, so that no id can climb out of the
archive or hide among the archive's own folders (those start with a dot, like ``.trash``).
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


def check_project_name(name: str) -> str:
    if not PROJECT_NAME.fullmatch(name):
        raise InvalidPath(
            f"invalid project name {name!r}: use up to 64 letters, digits, '-' or '_', starting with a letter or digit"
        )
    return name


def check_folder_id(kind: str, value: str) -> str:
    if not FOLDER_ID.fullmatch(value):
        raise InvalidPath(
            f"invalid {kind} id {value!r}: use up to 128 letters, digits, '.', '+', '-' or '_', "
            "starting with a letter or digit"
        )
    return value


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
        return self.project_dir(project) / check_folder_id("subject", subject)

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
        check_folder_id("subject", subject)
        check_folder_id("study", study)
        return Location(project, subject, study, check_relative_path("/".join(parts[3:])))
