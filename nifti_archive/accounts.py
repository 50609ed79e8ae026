"""Users, project roles and API tokens.

Passwords are stored as Argon2id hashes. API tokens are 256-bit random secrets, so a plain
SHA-256 of them is enough to store (no dictionary to guess from) and lets a request find
its token with one indexed lookup.
"""

from __future__ import annotations

import functools
import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from nifti_archive import login_throttle, user_sessions
from nifti_archive.errors import Conflict, InvalidValue, NotFound
from nifti_archive.models import AccountOrigin, ApiToken, Project, ProjectRole, Role, TokenKind, User, as_utc

USERNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
TOKEN_PREFIX_LENGTH = 8
LAST_USE_RESOLUTION = timedelta(minutes=1)
MAX_TOKEN_DAYS = 3650


class PasswordCost(Enum):
    """How much work an Argon2id hash costs (Settings.password_cost).

    STANDARD is argon2-cffi's default, RFC 9106's low-memory recommendation. CHEAP is for test
    suites only, where hundreds of users made per run would otherwise cost minutes. A hash
    carries its own parameters, so either kind verifies whatever the current setting.
    """

    STANDARD = "standard"
    CHEAP = "cheap"


_HASHERS = {
    PasswordCost.STANDARD: PasswordHasher(),
    PasswordCost.CHEAP: PasswordHasher(time_cost=1, memory_cost=8, parallelism=1),
}
_cost = [PasswordCost.STANDARD]


def use_password_cost(cost: PasswordCost) -> None:
    """Hash new passwords at this cost from now on, in this process."""
    _cost[0] = cost


def _hasher() -> PasswordHasher:
    return _HASHERS[_cost[0]]


def hash_password(password: str) -> str:
    return _hasher().hash(password)


def verify_password(user: User, password: str) -> bool:
    try:
        return _hasher().verify(user.password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


class LoginOutcome(Enum):
    OK = "ok"
    WRONG = "wrong"
    THROTTLED = "throttled"


@dataclass(frozen=True)
class LoginResult:
    outcome: LoginOutcome
    user_id: int | None = None
    retry_after: timedelta = timedelta(0)


@functools.cache
def _dummy_hash(cost: PasswordCost) -> str:
    # Unknown names are verified against this, so that they cost what a known name costs.
    return _HASHERS[cost].hash(secrets.token_urlsafe(16))


@dataclass(frozen=True)
class Attempt:
    """A log-in attempt's throttle keys as they stood when it began; any password check may use it."""

    username: str
    address: str
    now: datetime
    account: login_throttle.KeyState
    client: login_throttle.KeyState

    @property
    def throttled(self) -> LoginResult | None:
        """THROTTLED when a blocked address, or a blocked account from an address with recent failures, tries."""
        if self.client.blocked or (self.account.blocked and self.client.recent_failures):
            return LoginResult(LoginOutcome.THROTTLED, retry_after=max(self.client.retry_after, self.account.retry_after))
        return None


def begin_attempt(session: Session, username: str, address: str) -> Attempt:
    now = datetime.now(UTC)
    account = login_throttle.state(session, login_throttle.key(login_throttle.KeyKind.USER, username), now)
    client = login_throttle.state(session, login_throttle.key(login_throttle.KeyKind.ADDRESS, address), now)
    return Attempt(username, address, now, account, client)


def attempt_succeeded(session: Session, attempt: Attempt, user_id: int) -> LoginResult:
    # The owner's own typos are forgiven; a block stays, or the owner's log-in would hand
    # whoever is guessing a fresh set of free attempts.
    if not attempt.account.blocked:
        login_throttle.clear(session, login_throttle.KeyKind.USER, attempt.username)
    return LoginResult(LoginOutcome.OK, user_id)


def attempt_failed(session: Session, attempt: Attempt) -> LoginResult:
    login_throttle.forget_old(session, attempt.now)
    login_throttle.record_failure(session, login_throttle.KeyKind.USER, attempt.username, attempt.now)
    login_throttle.record_failure(session, login_throttle.KeyKind.ADDRESS, attempt.address, attempt.now)
    return LoginResult(LoginOutcome.WRONG)


def check_login(session: Session, username: str, password: str, address: str) -> LoginResult:
    """A log-in attempt from a client address, throttled per account name and per address.

    Unknown, disabled and known names take the same path (one Argon2 verification, the same
    counting), so neither the answer nor its time tells whether an account exists. A blocked
    address is refused; a blocked account is refused only to addresses with recent failures,
    so its owner at a clean address still gets in while someone elsewhere guesses.
    """
    attempt = begin_attempt(session, username, address)
    if attempt.throttled is not None:
        return attempt.throttled
    user = session.scalar(select(User).where(User.username == username))
    matches: bool
    try:
        matches = _hasher().verify(user.password_hash if user else _dummy_hash(_cost[0]), password)
    except (VerificationError, InvalidHashError):
        matches = False
    if matches and user is not None and not user.disabled:
        return attempt_succeeded(session, attempt, user.id)
    return attempt_failed(session, attempt)


def unlock(session: Session, username: str) -> None:
    """Lift the back-off on an account (a site admin's decision)."""
    get_user(session, username)
    login_throttle.clear(session, login_throttle.KeyKind.USER, username)


def one_time_password() -> str:
    return secrets.token_urlsafe(12)


def get_user(session: Session, username: str) -> User:
    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        raise NotFound(f"no user {username!r}")
    return user


def create_user(session: Session, username: str, site_admin: bool = False) -> tuple[User, str]:
    """A new user with a one-time password, returned once and stored only hashed."""
    if not USERNAME.fullmatch(username):
        raise InvalidValue(f"invalid user name {username!r}: up to 64 letters, digits, '.', '_', '@' or '-'")
    if session.scalar(select(User.id).where(User.username == username)) is not None:
        raise Conflict(f"user {username!r} already exists")
    password = one_time_password()
    user = User(username=username, password_hash=hash_password(password), is_site_admin=site_admin)
    session.add(user)
    session.flush()
    return user, password


def reset_password(session: Session, username: str) -> str:
    user = get_user(session, username)
    if user.origin is not AccountOrigin.LOCAL:
        # A password here would be a second way in that the institution cannot revoke.
        raise InvalidValue(f"{username!r} logs in through {user.provider} ({user.origin.value}); it has no password here")
    password = one_time_password()
    user.password_hash = hash_password(password)
    user.must_change_password = True
    user_sessions.end_user_sessions(session, user.id)
    return password


def set_password(user: User, password: str) -> None:
    if len(password) < 10:
        raise InvalidValue("a password needs at least 10 characters")
    user.password_hash = hash_password(password)
    user.must_change_password = False


def count_users(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(User)) or 0


def list_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.username)))


def list_roles(session: Session, project: Project | None = None) -> list[tuple[str, str, Role]]:
    query = (
        select(User.username, Project.name, ProjectRole.role)
        .join(User, User.id == ProjectRole.user_id)
        .join(Project, Project.id == ProjectRole.project_id)
        .order_by(Project.name, User.username)
    )
    if project is not None:
        query = query.where(ProjectRole.project_id == project.id)
    return [(username, name, role) for username, name, role in session.execute(query)]


def set_disabled(session: Session, username: str, disabled: bool) -> None:
    get_user(session, username).disabled = disabled


def grant_role(session: Session, user: User, project: Project, role: Role) -> None:
    existing = session.get(ProjectRole, (user.id, project.id))
    if existing is None:
        session.add(ProjectRole(user_id=user.id, project_id=project.id, role=role))
    else:
        existing.role = role
    session.flush()


def revoke_role(session: Session, user: User, project: Project) -> None:
    existing = session.get(ProjectRole, (user.id, project.id))
    if existing is None:
        raise NotFound(f"{user.username!r} has no role on project {project.name!r}")
    session.delete(existing)
    session.flush()


def role_on(session: Session, user: User, project: Project) -> Role | None:
    """The user's effective role: site admins administer every project; disabled users have none."""
    grant = None if user.disabled or user.is_site_admin else session.get(ProjectRole, (user.id, project.id))
    return effective_role(user, grant.role if grant else None)


def effective_role(user: User, granted: Role | None) -> Role | None:
    """The role a user acts with where they were granted ``granted``, as ``role_on`` decides it."""
    if user.disabled:
        return None
    return Role.ADMIN if user.is_site_admin else granted


def parse_role(text: str) -> Role:
    try:
        return Role(text.lower())
    except ValueError:
        raise InvalidValue(f"unknown role {text!r}; roles are {', '.join(r.value for r in Role)}") from None


def _token_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class IssuedToken:
    token: ApiToken
    secret: str


def create_token(session: Session, user: User, name: str, expires_in_days: int | None = None,
                 kind: TokenKind = TokenKind.PERSONAL) -> IssuedToken:
    if expires_in_days is not None and not 1 <= expires_in_days <= MAX_TOKEN_DAYS:
        raise InvalidValue(f"a token's lifetime is 1 to {MAX_TOKEN_DAYS} days (or none: it never expires), not {expires_in_days}")
    secret = "nrt_" + secrets.token_urlsafe(32)
    expires_at = datetime.now(UTC) + timedelta(days=expires_in_days) if expires_in_days else None
    token = ApiToken(
        user_id=user.id,
        name=name,
        prefix=secret[:TOKEN_PREFIX_LENGTH],
        token_hash=_token_hash(secret),
        expires_at=expires_at,
        kind=kind,
    )
    session.add(token)
    session.flush()
    return IssuedToken(token, secret)


def valid_token(session: Session, secret: str) -> ApiToken | None:
    """The token a secret names, or None when it is unknown, revoked, expired or its user disabled."""
    token = session.scalar(select(ApiToken).where(ApiToken.token_hash == _token_hash(secret)))
    now = datetime.now(UTC)
    if token is None or not token.is_live(now):
        return None
    if _use_due(token, now):
        token.last_used_at = now
    return None if session.get_one(User, token.user_id).disabled else token


def _use_due(token: ApiToken, now: datetime) -> bool:
    # Recorded to the minute: a script's every call must not cost a write.
    return token.last_used_at is None or as_utc(token.last_used_at) < now - LAST_USE_RESOLUTION


def token_caller(session: Session, secret: str) -> user_sessions.Authenticated | None:
    """As ``valid_token``, with the token's user and their grants in the same statement, reading
    only: when last_used_at is due, ``use_due`` says so and ``record_token_use`` writes it."""
    rows = session.execute(user_sessions.with_grants(
        select(ApiToken, User).join(User, User.id == ApiToken.user_id).where(ApiToken.token_hash == _token_hash(secret))
    )).all()
    now = datetime.now(UTC)
    if not rows or not rows[0].ApiToken.is_live(now) or rows[0].User.disabled:
        return None
    token: ApiToken = rows[0].ApiToken
    return user_sessions.Authenticated(rows[0].User, user_sessions.grants_of(rows), token.project_id, _use_due(token, now))


def record_token_use(session: Session, secret: str) -> None:
    session.execute(update(ApiToken).where(ApiToken.token_hash == _token_hash(secret)).values(last_used_at=datetime.now(UTC)))


def user_for_token(session: Session, secret: str) -> User | None:
    """The user a token authenticates, or None when it is unknown, revoked or expired."""
    token = valid_token(session, secret)
    return session.get_one(User, token.user_id) if token else None


def revoke_token(session: Session, token_id: int) -> ApiToken:
    token = session.get(ApiToken, token_id)
    if token is None:
        raise NotFound(f"no token {token_id}")
    token.revoked_at = datetime.now(UTC)
    return token


def list_tokens(session: Session, user: User) -> list[ApiToken]:
    return list(session.scalars(select(ApiToken).where(ApiToken.user_id == user.id).order_by(ApiToken.id)))


def service_user(session: Session, username: str) -> User:
    """The account run tokens act as when nobody who launched the run is a user here (the command
    line's operator, autoexec); created on demand, with no password anyone knows."""
    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        user = User(username=username, password_hash=hash_password(secrets.token_urlsafe(32)), must_change_password=True)
        session.add(user)
        session.flush()
    return user


def issue_run_token(
    session: Session, project: Project, run_id: int, launched_by: str, lifetime: timedelta, service_username: str
) -> IssuedToken:
    """A token for one job run: it acts on ``project`` only (the portal caps such a token at the
    editor role, which the service account gets there), as the user who launched the run or
    else the service account, and it expires after ``lifetime``."""
    user = session.scalar(select(User).where(User.username == launched_by))
    if user is None:
        user = service_user(session, service_username)
    issued = create_token(session, user, f"run {run_id}", kind=TokenKind.JOB)
    issued.token.project_id = project.id
    issued.token.job_run_id = run_id
    issued.token.expires_at = datetime.now(UTC) + lifetime
    session.flush()
    return issued


def revoke_run_tokens(session: Session, run_id: int) -> int:
    """Revoke every live token issued for the run; returns how many."""
    tokens = session.scalars(select(ApiToken).where(ApiToken.job_run_id == run_id, ApiToken.revoked_at.is_(None))).all()
    now = datetime.now(UTC)
    for token in tokens:
        token.revoked_at = now
    return len(tokens)
