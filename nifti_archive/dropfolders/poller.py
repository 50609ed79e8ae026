"""The poller: every few seconds, each drop folder is listed, and what has stopped changing is
imported, moved to done/ or failed/, and remembered in the archive database.

Polling, not inotify: change notifications do not cross NFS or SMB, where instruments write.
``python -m nifti_archive.dropfolders.poller`` runs it until SIGTERM; ``service`` starts it.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import select

from nifti_archive.archive import Archive
from nifti_archive.dropfolders import folders, scan, step
from nifti_archive.dropfolders.folders import POLL_SECONDS
from nifti_archive.errors import ArchiveError
from nifti_archive.models import DropAction, DropEntry, DropFolder, DropState, utcnow
from nifti_archive.orthanc_api import OrthancRest, OrthancUnavailable, orthanc_for
from nifti_archive.settings import load_settings

log = logging.getLogger(__name__)


class Poller:
    def __init__(self, archive: Archive, orthanc: OrthancRest, clock: Callable[[], float] = time.monotonic) -> None:
        self.archive = archive
        self.orthanc = orthanc
        self.clock = clock
        self.stability: dict[int, scan.Stability] = {}
        self.poller_id = step.poller_id(archive.settings)

    def poll_once(self) -> None:
        with self.archive.sessions() as session:
            declared = folders.list_drop_folders(session)
            session.expunge_all()
        for folder in declared:
            self._poll(folder)
        self.stability = {folder.id: self.stability.get(folder.id, scan.Stability()) for folder in declared}
        beat = folders.heartbeat_file(self.archive.settings)
        beat.parent.mkdir(parents=True, exist_ok=True)
        beat.touch()

    def _set_problem(self, folder: DropFolder, problem: str) -> None:
        if problem == folder.problem:
            return
        if problem:
            log.error("drop folder %s (%s): %s; trying again every %g s", folder.name, folder.path, problem, POLL_SECONDS)
        else:
            log.info("drop folder %s (%s) is back", folder.name, folder.path)
        with self.archive.unit_of_work() as (session, _journal):
            row = session.get_one(DropFolder, folder.id)
            row.problem, row.problem_since = problem, utcnow() if problem else None

    def _leads_inside(self, folder: DropFolder) -> bool:
        own = folders.own_folder_overlapping(self.archive.settings, Path(folder.path))
        if own is not None:
            self._set_problem(folder, f"it now leads into the archive's own folder {own}; not polled")
        return own is not None

    def _entries(self, folder: DropFolder) -> list[scan.Entry] | None:
        where = Path(folder.path)
        try:
            names = sorted(name for name in os.listdir(where) if not scan.ignored(name))
        except OSError as exc:
            # A mount that went away, a folder removed or renamed, a server not answering.
            self._set_problem(folder, f"cannot list the folder: {exc.strerror or exc}")
            return None
        self._set_problem(folder, "")
        entries = []
        for name in names:
            try:
                entries.append(scan.survey(where, name))
            except OSError as exc:  # gone or renamed between the listing and its survey
                log.info("drop folder %s: %r changed while it was read (%s)", folder.name, name, exc.strerror or exc)
        return entries

    def _poll(self, folder: DropFolder) -> None:
        if self._leads_inside(folder):
            return
        # Listed, decided and imported under the lock: what another poller did before is in the
        # folder and the database by then.
        with step.folder_lock(self.archive.settings, folder.id) as held:
            if held:
                self._poll_held(folder)
            else:
                log.debug("drop folder %s: another poller of this host is at it; skipped this pass", folder.name)

    def _poll_held(self, folder: DropFolder) -> None:
        entries = self._entries(folder)
        if entries is None:
            return
        stable = self.stability.setdefault(folder.id, scan.Stability()).stable(entries, self.clock(), folder.stable_seconds)
        with self.archive.sessions() as session:
            remembered = {row.name: scan.Remembered(scan.Signature(row.size, row.mtime, row.files), row.state, row.message)
                          for row in session.scalars(select(DropEntry).where(DropEntry.folder_id == folder.id))}
        for entry in entries:
            seen = remembered.get(entry.name)
            decided = scan.decide(entry, entry.name in stable, seen, folder.action, self.poller_id)
            if decided is scan.Step.IMPORT:
                self._import(folder, entry, seen)
            elif decided is scan.Step.FINISH:
                step.finish(self.archive, folder, entry)
            elif decided is scan.Step.REFUSE:
                assert entry.refusal is not None
                step.refuse(self.archive, folder, entry, entry.refusal)

    def _import(self, folder: DropFolder, entry: scan.Entry, seen: scan.Remembered | None) -> None:
        if not step.claim(self.archive, folder.id, entry, seen, self.poller_id):
            log.info("drop folder %s: %r was claimed by another poller meanwhile; left to it", folder.name, entry.name)
            return
        try:
            imported = step.import_entry(self.archive, self.orthanc, folder, entry)
        except OrthancUnavailable as exc:
            if exc.unreachable:  # Orthanc is down, not the entry broken: the next pass tries again
                log.error("drop folder %s: %r not imported now: %s", folder.name, entry.name, exc)
                return
            step.refuse(self.archive, folder, entry, str(exc))
            return
        except (ArchiveError, step.NothingImported) as exc:
            step.refuse(self.archive, folder, entry, str(exc))
            return
        except OSError as exc:
            step.refuse(self.archive, folder, entry, f"could not be read: {exc.strerror or exc}")
            return
        with self.archive.unit_of_work() as (session, _journal):
            step.remember(session, session.get_one(DropFolder, folder.id), entry, DropState.DONE)
        report = imported.report
        log.info("drop folder %s: %r: stored %d DICOM file(s) in %d series, %d extra file(s)",
                 folder.name, entry.name, report.stored, len(report.series), report.extras)
        if folder.action is DropAction.MOVE:
            step.finish(self.archive, folder, entry, step.note_of(report), imported.taken)

    def run(self, stop: threading.Event, interval: float = POLL_SECONDS) -> None:
        while not stop.is_set():
            try:
                self.poll_once()
            except Exception:  # the poller outlives any one bad pass: it is what keeps instruments flowing
                log.exception("drop folder pass failed; trying again")
            stop.wait(interval)


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    settings = load_settings()
    archive = Archive(settings)
    archive.check_schema()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda _signum, _frame: stop.set())
    log.info("drop folder poller started (every %g s)", POLL_SECONDS)
    try:
        Poller(archive, orthanc_for(settings)).run(stop)
    finally:
        archive.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
