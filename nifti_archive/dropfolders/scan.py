"""What the poller decides, as plain functions of what it saw: which entries have stopped changing,
which are refused (links out of the folder, special files, unreadable files), what is done with
each, and the names they get in done/ and failed/.

An entry is a top-level file or archive, or a top-level subfolder with everything in it: an
instrument writes a study's DICOM and its other files into one subfolder, and the importer
attaches the non-DICOM files to the study of the DICOM beside them.
"""

from __future__ import annotations

import enum
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from nifti_archive.models import DropAction, DropState

DONE_FOLDER = "done"
FAILED_FOLDER = "failed"
REASON_SUFFIX = ".reason.txt"
NOTE_SUFFIX = ".skipped.txt"
# No instrument nests folders this deep; os.walk recurses, and a deeper tree would stop every pass.
MAX_DEPTH = 32
# The longest file name Linux file systems take, in bytes.
NAME_MAX = 255
# Room for unique_name's "~N" and a note's suffix beside a name already as long as the system allows.
NAME_RESERVE = 8 + max(len(REASON_SUFFIX), len(NOTE_SUFFIX))


@dataclass(frozen=True)
class Signature:
    """What changes while an entry is being written: for a subfolder, its files' count and total
    size and the newest mtime of its files and folders (a new file changes its folder's mtime)."""

    size: int
    mtime: float
    count: int = 1


@dataclass(frozen=True)
class Entry:
    name: str
    signature: Signature
    # Why it can never be imported as it is; None for an entry worth trying.
    refusal: str | None = None


@dataclass(frozen=True)
class Remembered:
    """What the archive database says of an entry of this name."""

    signature: Signature
    state: DropState
    # For an entry being imported, the poller that claimed it ("" for a claim older than that).
    message: str = ""


class Step(enum.Enum):
    # Still changing, or seen unchanged for less than the folder's stable time.
    WAIT = "wait"
    IMPORT = "import"
    # Imported already (perhaps just before a restart): only the move to done/ is left.
    FINISH = "finish"
    REFUSE = "refuse"
    # Imported and kept in place, or failed and impossible to move: nothing more to do.
    NOTHING = "nothing"


def ignored(name: str) -> bool:
    """The poller's own folders, and dot-files: writers that rename a finished file write it under
    a hidden name first, and SMB and macOS clients leave metadata files beside everything."""
    return name in (DONE_FOLDER, FAILED_FOLDER) or name.startswith(".")


def link_escapes(folder: Path, link: Path) -> bool:
    target = Path(os.path.realpath(link))
    return not target.is_relative_to(Path(os.path.realpath(folder)))


def refusal(folder: Path, path: Path, mode: int, readable: bool) -> str | None:
    """Why one file (``mode`` from lstat) cannot be imported; None when it can be tried."""
    if stat.S_ISLNK(mode):
        return "a symbolic link pointing out of the drop folder" if link_escapes(folder, path) else None
    if stat.S_ISDIR(mode):
        return None
    if not stat.S_ISREG(mode):
        # Reading a FIFO would block the poller; a device or socket is no instrument's output.
        return "not a regular file (a pipe, socket or device)"
    if not readable:
        return "no permission to read it"
    return None


def _walk(top: Path) -> Iterator[tuple[Path, os.stat_result]]:
    for directory, folders, files in os.walk(top, followlinks=False):
        for name in folders + files:
            path = Path(directory) / name
            yield path, path.lstat()


def survey(folder: Path, name: str) -> Entry:
    """The entry ``name`` of ``folder`` as it is now. Raises OSError when it vanished meanwhile."""
    path = folder / name
    info = path.lstat()
    reason = refusal(folder, path, info.st_mode, os.access(path, os.R_OK, follow_symlinks=False))
    if reason or not stat.S_ISDIR(info.st_mode):
        return Entry(name, Signature(info.st_size, info.st_mtime), reason)
    size, mtime, count = 0, info.st_mtime, 0
    for inner, inner_info in _walk(path):
        if len(inner.relative_to(path).parts) > MAX_DEPTH:
            return Entry(name, Signature(info.st_size, info.st_mtime), f"folders nested deeper than {MAX_DEPTH}")
        inner_reason = refusal(folder, inner, inner_info.st_mode, os.access(inner, os.R_OK, follow_symlinks=False))
        if inner_reason:
            return Entry(name, Signature(info.st_size, info.st_mtime), f"{inner.relative_to(folder)}: {inner_reason}")
        mtime = max(mtime, inner_info.st_mtime)
        if not stat.S_ISDIR(inner_info.st_mode):
            size += inner_info.st_size
            count += 1
    return Entry(name, Signature(size, mtime, count))


class Stability:
    """Entries seen with the same signature for at least the folder's stable time, by the poller's
    clock: the writer's clock (a modality's, across NFS) may be off, so mtimes are compared only
    with each other, never with now."""

    def __init__(self) -> None:
        self.first_seen: dict[str, tuple[Signature, float]] = {}

    def stable(self, entries: list[Entry], now: float, seconds: float) -> set[str]:
        stable = set()
        first_seen = {}
        for entry in entries:
            previous = self.first_seen.get(entry.name)
            if previous is not None and previous[0] == entry.signature:
                first_seen[entry.name] = previous
                # Seen once only is never stable, even with no wait asked for: it may be growing.
                if now - previous[1] >= seconds:
                    stable.add(entry.name)
            else:
                first_seen[entry.name] = (entry.signature, now)
        self.first_seen = first_seen
        return stable


def decide(entry: Entry, stable: bool, remembered: Remembered | None, action: DropAction, poller: str = "") -> Step:
    """What ``poller`` does with the entry now."""
    if remembered is not None and remembered.state is DropState.IMPORTING and remembered.message not in ("", poller):
        # Claimed by a poller on another host, which finishes it (or, gone for good, leaves it listed as importing).
        return Step.NOTHING
    if remembered is not None and remembered.signature == entry.signature:
        if remembered.state is DropState.DONE:
            return Step.FINISH if action is DropAction.MOVE else Step.NOTHING
        if remembered.state is DropState.FAILED:
            return Step.NOTHING
        # IMPORTING by this poller, which holds the folder's lock: it stopped during that import,
        # and importing again stores nothing twice.
    # An empty subfolder is an instrument that made its folder and has not written into it yet.
    if not stable or entry.signature.count == 0:
        return Step.WAIT
    return Step.REFUSE if entry.refusal else Step.IMPORT


def unique_name(name: str, taken: Callable[[str], bool]) -> str:
    """``name``, or ``stem~2.ext``, ``stem~3.ext``...: the first not ``taken`` (an instrument reuses names).
    A name too long to take a number and a note's suffix is cut first."""
    raw = os.fsencode(name)
    if len(raw) > NAME_MAX - NAME_RESERVE:
        name = os.fsdecode(raw[: NAME_MAX - NAME_RESERVE])
    if not taken(name):
        return name
    path = PurePosixPath(name)
    suffix = "".join(path.suffixes)
    stem = name[: len(name) - len(suffix)] if suffix and len(suffix) < len(name) else name
    suffix = suffix if stem != name else ""
    number = 2
    while taken(f"{stem}~{number}{suffix}"):
        number += 1
    return f"{stem}~{number}{suffix}"
