"""Log-ins held on the server: opened at log-in, ended by log-out, a password change or reset,
the revocation of the token a session was opened with, or their age.

The browser's cookie carries a random secret; the table keeps only its SHA-256, so a copy of
the database opens no session, and a cookie copied before log-out is worth nothing after.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import update
from sqlalchemy.orm import Session

from nifti_archive.models import ApiToken, User, UserSession, as_utc, utcnow

LAST_SEEN_RESOLUTION = timedelta(minutes=1)
ADDRESS_LENGTH = 64


def _session_id(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def open_session(session: Session, user_id: int, address: str, token_id: int | None = None) -> str:
    """A new session; returns the secret for the cookie (stored only hashed)."""
    secret = secrets.token_urlsafe(32)
    session.add(UserSession(id=_session_id(secret), user_id=user_id, token_id=token_id, address=address[:ADDRESS_LENGTH]))
    session.flush()
    return secret


@dataclass(frozen=True)
class LiveSession:
    user_id: int
    token_id: int | None
    # The project a scoped token limits the session to; None: wherever the user may go.
    token_project_id: int | None


def live_session(session: Session, secret: str, lifetime: timedelta) -> LiveSession | None:
    """The session a cookie's secret names while it lasts: not ended, not older than ``lifetime``,
    its user enabled, and the token it was opened with (if any) neither revoked nor expired."""
    record = session.get(UserSession, _session_id(secret))
    now = utcnow()
    if record is None or record.ended_at is not None or as_utc(record.created_at) + lifetime <= now:
        return None
    if session.get_one(User, record.user_id).disabled:
        return None
    token = session.get(ApiToken, record.token_id) if record.token_id is not None else None
    if record.token_id is not None and (token is None or not token.is_live(now)):
        return None
    if as_utc(record.last_seen_at) < now - LAST_SEEN_RESOLUTION:
        record.last_seen_at = now
    return LiveSession(record.user_id, record.token_id, token.project_id if token else None)


def end_session(session: Session, secret: str) -> None:
    session.execute(update(UserSession).where(UserSession.id == _session_id(secret), UserSession.ended_at.is_(None))
                    .values(ended_at=utcnow()))


def end_user_sessions(session: Session, user_id: int) -> None:
    """Every open session of the user ends (a new or reset password)."""
    session.execute(update(UserSession).where(UserSession.user_id == user_id, UserSession.ended_at.is_(None))
                    .values(ended_at=utcnow()))
