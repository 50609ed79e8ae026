"""Setting an installation up: schema, secrets, the first site admin."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable

from sqlalchemy.orm import Session

from nifti_archive import accounts, db
from nifti_archive.archive import Archive
from nifti_archive.errors import InvalidPath
from nifti_archive.permissions import secure_installation
from nifti_archive.settings import Settings

FIRST_ADMIN = "admin"
SECRETS: dict[str, Callable[[], str]] = {
    # Orthanc's REST password for Northanc's own calls (plugin, import, tests).
    "orthanc_password": lambda: secrets.token_urlsafe(24),
    # The key of the pseudonyms: losing it means new pseudonyms for returning patients.
    "pseudonym_key": lambda: secrets.token_hex(32),
    # Signs the portal's session cookies; replacing it logs everybody out.
    "portal_secret": lambda: secrets.token_hex(32),
    # The portal's key to the segmentation assistant (which answers nobody else).
    "assistant_token": lambda: secrets.token_urlsafe(32),
}


def write_secrets(settings: Settings) -> None:
    """Create the installation's secrets once, readable by their owner only."""
    settings.secrets_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    for name, make in SECRETS.items():
        path = settings.secrets_dir / name
        if not path.exists():
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as fh:
                fh.write(make() + "\n")


def _first_admin(session: Session) -> str | None:
    if accounts.count_users(session):
        return None
    _user, password = accounts.create_user(session, FIRST_ADMIN, site_admin=True)
    return password


def initialise(archive: Archive) -> str | None:
    """Create or upgrade everything; returns the first admin's one-time password when one was made."""
    root = archive.settings.archive_root
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidPath(f"cannot create the archive root {root}: {exc.strerror}") from exc
    db.upgrade(archive.engine)
    write_secrets(archive.settings)
    secure_installation(archive.settings)
    with archive.unit_of_work() as (session, _journal):
        return _first_admin(session)
