"""Log-ins held on the server: opened at log-in, ended by log-out, a password change or reset,
the revocation of the token a session was opened with, or their age.

The browser's cookie carries a random secret; the table keeps only its SHA-256, so a copy of
the database opens no session, and a cookie copied before log-out is worth nothing after.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, select, update
from sqlalchemy.orm import Session

from nifti_archive.models import ApiToken, ProjectRole, Role, User, UserSession, as_utc, utcnow

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


def _is_live(record: UserSession, user: User, token: ApiToken | None, lifetime: timedelta, now: datetime) -> bool:
    if record.ended_at is not None or as_utc(record.created_at) + lifetime <= now or user.disabled:
        return False
    return record.token_id is None or (token is not None and token.is_live(now))


def live_session(session: Session, secret: str, lifetime: timedelta) -> LiveSession | None:
    """The session a cookie's secret names while it lasts: not ended, not older than ``lifetime``,
    its user enabled, and the token it was opened with (if any) neither revoked nor expired."""
    record = session.get(UserSession, _session_id(secret))
    now = utcnow()
    if record is None:
        return None
    token = session.get(ApiToken, record.token_id) if record.token_id is not None else None
    if not _is_live(record, session.get_one(User, record.user_id), token, lifetime, now):
        return None
    if as_utc(record.last_seen_at) < now - LAST_SEEN_RESOLUTION:
        record.last_seen_at = now
    return LiveSession(record.user_id, record.token_id, token.project_id if token else None)


@dataclass(frozen=True)
class Authenticated:
    """A caller proven by a cookie's session or an API token, with everything the portal's access
    decisions read about them, found by one statement."""

    user: User
    # The user's roles by project id, as granted (site admins and disabled users aside).
    grants: dict[int, Role]
    # The project a scoped token limits the caller to; None: wherever the user may go.
    token_project_id: int | None
    # Whether the session's last_seen_at, or the token's last_used_at, is due to be recorded.
    use_due: bool


def with_grants(statement: Select[tuple[Any, ...]]) -> Select[tuple[Any, ...]]:
    """``statement`` (rows naming a ``User``) with each of that user's grants, or one row without any."""
    return statement.add_columns(ProjectRole.project_id, ProjectRole.role).outerjoin(ProjectRole, ProjectRole.user_id == User.id)


def grants_of(rows: Sequence[Any]) -> dict[int, Role]:
    return {row.project_id: row.role for row in rows if row.project_id is not None}


def session_caller(session: Session, secret: str, lifetime: timedelta) -> Authenticated | None:
    """As ``live_session``, reading only: when last_seen_at is due, ``use_due`` says so and
    ``record_seen`` writes it, so that a request that only reads opens no write transaction."""
    rows = session.execute(with_grants(
        select(UserSession, User, ApiToken)
        .join(User, User.id == UserSession.user_id)
        .outerjoin(ApiToken, ApiToken.id == UserSession.token_id)
        .where(UserSession.id == _session_id(secret))
    )).all()
    if not rows:
        return None
    record, user, token = rows[0].UserSession, rows[0].User, rows[0].ApiToken
    now = utcnow()
    if not _is_live(record, user, token, lifetime, now):
        return None
    due = as_utc(record.last_seen_at) < now - LAST_SEEN_RESOLUTION
    return Authenticated(user, grants_of(rows), token.project_id if token else None, due)


def record_seen(session: Session, secret: str) -> None:
    session.execute(update(UserSession).where(UserSession.id == _session_id(secret)).values(last_seen_at=utcnow()))


def end_session(session: Session, secret: str) -> None:
    session.execute(update(UserSession).where(UserSession.id == _session_id(secret), UserSession.ended_at.is_(None))
                    .values(ended_at=utcnow()))


def end_user_sessions(session: Session, user_id: int) -> None:
    """Every open session of the user ends (a new or reset password)."""
    session.execute(update(UserSession).where(UserSession.user_id == user_id, UserSession.ended_at.is_(None))
                    .values(ended_at=utcnow()))
