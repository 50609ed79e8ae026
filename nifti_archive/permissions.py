"""Who may read the archive's files on disk.

Everything under ``var/`` (secrets, the index database, Orthanc's storage, logs, uploads, run
folders) is the archive's own: folders 0700, files 0600 or 0640 inside them. Two trees are
the exception, read from sandboxes as the unprivileged jobs account: the NIfTI tree (batch jobs
read their project there) and the segmentation models (the assistant runs them). So each
belongs to that account's group with the set-group-id bit, folders below it 0750 and files
0640, and nothing in it is readable by other accounts.

Files created in a set-group-id folder take its group by themselves; files *moved* into it
keep theirs, so ``inherit_group`` gives them the folder's group (``FileJournal.move`` calls it).
"""

from __future__ import annotations

import grp
import logging
import os
import pwd
import stat
from pathlib import Path

from nifti_archive.settings import Settings

log = logging.getLogger(__name__)

# Group bits stay for the archive tree's group; nothing for other accounts.
PROCESS_UMASK = 0o027
PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
ARCHIVE_DIR = 0o2750


def restrict_process() -> None:
    """Every process of ours creates files with no rights for other accounts."""
    os.umask(PROCESS_UMASK)


def jobs_group(settings: Settings) -> int | None:
    """The jobs account's group id, or None where the account does not exist (a bare checkout)."""
    try:
        return pwd.getpwnam(settings.jobs_user).pw_gid
    except KeyError:
        try:
            return grp.getgrnam(settings.jobs_user).gr_gid
        except KeyError:
            return None


def _private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(PRIVATE_DIR)


def secure_installation(settings: Settings) -> None:
    """Set the modes of an installation's folders and files (``nora --admin init`` runs it each time)."""
    _private_dir(settings.var_dir)
    for folder in (settings.secrets_dir, settings.log_dir, settings.var_dir / "orthanc"):
        _private_dir(folder)
    for secret in settings.secrets_dir.iterdir():
        secret.chmod(PRIVATE_FILE)
    for log_file in settings.log_dir.iterdir():
        if log_file.is_file():
            log_file.chmod(PRIVATE_FILE)
    if settings.is_sqlite:
        database = Path(settings.database_url.removeprefix("sqlite:///"))
        for path in (database, database.with_name(database.name + "-wal"), database.with_name(database.name + "-shm")):
            if path.exists():
                path.chmod(PRIVATE_FILE)
    secure_archive_root(settings)
    secure_jobs_tree(settings, settings.models_dir)


def secure_archive_root(settings: Settings) -> None:
    secure_jobs_tree(settings, settings.archive_root)


def secure_jobs_tree(settings: Settings, root: Path) -> None:
    """``root`` readable by the jobs account's group, and everything that comes into it after."""
    root.mkdir(parents=True, exist_ok=True)
    gid = jobs_group(settings)
    if gid is None:
        log.warning("no account %r: %s stays private and sandboxes cannot read it", settings.jobs_user, root)
        root.chmod(PRIVATE_DIR)
        return
    status = root.stat()
    if status.st_gid == gid and status.st_mode & stat.S_ISGID:
        return  # set up before: everything since took the group on its way in
    os.chown(root, -1, gid)
    root.chmod(ARCHIVE_DIR)
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            inherit_group(Path(folder) / name, recursive=False)
        for name in files:
            inherit_group(Path(folder) / name, recursive=False)


def inherit_group(path: Path, recursive: bool = True) -> None:
    """Give ``path`` (and what is below it) the group of its folder where that folder is set-group-id."""
    parent = path.parent.stat()
    if not parent.st_mode & stat.S_ISGID:
        return
    for item in _walk(path) if recursive else [path]:
        status = item.lstat()
        if stat.S_ISLNK(status.st_mode):
            continue
        if status.st_gid != parent.st_gid:
            os.chown(item, -1, parent.st_gid)
        if stat.S_ISDIR(status.st_mode):
            item.chmod((status.st_mode & 0o700) | 0o2050)
        else:
            item.chmod((status.st_mode & 0o700) | 0o040)


def _walk(path: Path) -> list[Path]:
    if not path.is_dir() or path.is_symlink():
        return [path]
    return [path, *path.rglob("*")]
