"""The portal as an OAuth2 authorization server (RFC 6749, authorization-code grant) for one
kind of client: the notebook hub, which needs nothing but to know who the user is.

Secrets are random (256 bits) and stored as SHA-256, like API tokens: a stolen database
yields no usable secret. A code is single-use and lives a minute; it is bound to its client,
to the redirect URI it was sent to (which must equal the registered one exactly) and to the
PKCE challenge the client sent with it (RFC 7636, S256), if any. An access token only reads
the user's identity (``userinfo``): it is no API token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from nifti_archive import accounts
from nifti_archive.catalog.projects import list_projects
from nifti_archive.errors import ArchiveError, InvalidValue
from nifti_archive.models import OAuthClient, OAuthGrant, OAuthGrantKind, User, as_utc

CODE_LIFETIME = timedelta(minutes=1)
ACCESS_LIFETIME = timedelta(minutes=10)
SECRET_BYTES = 32
# A client id is chosen by the site admin who registers the hub; kept plain so it can sit in URLs.
CLIENT_ID_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


class OAuthError(ArchiveError):
    """A refused OAuth request, with the RFC 6749 error code the answer carries."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def register_client(session: Session, client_id: str, redirect_uri: str) -> str:
    """Register (or re-register, with a new secret) a client; returns its secret, shown once."""
    if not client_id or len(client_id) > 64 or not set(client_id) <= CLIENT_ID_CHARACTERS:
        raise InvalidValue(f"a client id is 1 to 64 letters, digits and -_. ; not {client_id!r}")
    if not redirect_uri.startswith(("https://", "http://")) or len(redirect_uri) > 1000:
        raise InvalidValue(f"a redirect URI is an absolute http(s) URL; not {redirect_uri!r}")
    secret = secrets.token_urlsafe(SECRET_BYTES)
    client = session.scalar(select(OAuthClient).where(OAuthClient.client_id == client_id))
    if client is None:
        client = OAuthClient(client_id=client_id)
        session.add(client)
    client.secret_hash, client.redirect_uri = _hash(secret), redirect_uri
    session.flush()
    return secret


def _client(session: Session, client_id: str) -> OAuthClient | None:
    return session.scalar(select(OAuthClient).where(OAuthClient.client_id == client_id))


def check_authorization_request(session: Session, client_id: str, redirect_uri: str, response_type: str) -> OAuthClient:
    """The client of an authorization request, once its redirect URI is the registered one.

    These failures are answered to the browser, never by a redirect: an unchecked redirect URI
    would send the code (or the user) wherever an attacker's link says."""
    client = _client(session, client_id)
    if client is None:
        raise OAuthError("invalid_client", "unknown OAuth client")
    if not hmac.compare_digest(redirect_uri.encode(), client.redirect_uri.encode()):
        raise OAuthError("invalid_request", "the redirect URI is not the one registered for this client")
    if response_type != "code":
        raise OAuthError("unsupported_response_type", "only the authorization-code flow (response_type=code) is offered")
    return client


def issue_code(session: Session, client: OAuthClient, user: User, code_challenge: str = "", challenge_method: str = "") -> str:
    """A code for ``user``, bound to the PKCE challenge when the client sent one (S256 only:
    a plain challenge would travel as the verifier itself)."""
    if code_challenge and (challenge_method != "S256" or not 43 <= len(code_challenge) <= 128):
        raise OAuthError("invalid_request", "a PKCE challenge is S256: code_challenge_method=S256 and 43 to 128 characters")
    return _issue(session, OAuthGrantKind.CODE, client, user, CODE_LIFETIME, code_challenge or None)


def _issue(session: Session, kind: OAuthGrantKind, client: OAuthClient, user: User, lifetime: timedelta,
           code_challenge: str | None = None) -> str:
    secret = secrets.token_urlsafe(SECRET_BYTES)
    session.add(OAuthGrant(kind=kind, secret_hash=_hash(secret), client_id=client.id, user_id=user.id,
                           redirect_uri=client.redirect_uri, code_challenge=code_challenge,
                           expires_at=datetime.now(UTC) + lifetime))
    session.flush()
    return secret


def authenticate_client(session: Session, client_id: str, client_secret: str) -> OAuthClient:
    client = _client(session, client_id)
    # Compared even for an unknown client, so the answer's timing does not tell ids apart.
    expected = client.secret_hash if client else _hash(secrets.token_urlsafe(SECRET_BYTES))
    if not hmac.compare_digest(_hash(client_secret), expected) or client is None:
        raise OAuthError("invalid_client", "client authentication failed")
    return client


@dataclass(frozen=True)
class AccessToken:
    token: str
    expires_in: int


def _challenge_of(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


def exchange_code(session: Session, client: OAuthClient, code: str, redirect_uri: str, code_verifier: str = "") -> AccessToken:
    """An access token for a code, once: the code must be the client's, live, unused, and sent
    with the redirect URI it was issued for. A code presented twice also ends the client's live
    tokens for that user (RFC 6749 §4.1.2: it may have been stolen). The caller commits what a
    refusal changed (the code marked used, those tokens ended)."""
    grant = session.scalar(select(OAuthGrant).where(OAuthGrant.secret_hash == _hash(code),
                                                    OAuthGrant.kind == OAuthGrantKind.CODE).with_for_update())
    now = datetime.now(UTC)
    if grant is None or grant.client_id != client.id:
        raise OAuthError("invalid_grant", "unknown authorization code")
    if grant.used_at is not None:
        _end_access_tokens(session, grant)
        raise OAuthError("invalid_grant", "the authorization code was used already")
    grant.used_at = now
    if as_utc(grant.expires_at) <= now:
        raise OAuthError("invalid_grant", "the authorization code has expired")
    if not hmac.compare_digest(redirect_uri.encode(), grant.redirect_uri.encode()):
        raise OAuthError("invalid_grant", "the redirect URI differs from the authorization request's")
    if grant.code_challenge is not None and not hmac.compare_digest(_challenge_of(code_verifier), grant.code_challenge):
        raise OAuthError("invalid_grant", "the PKCE code verifier does not match the challenge")
    user = session.get_one(User, grant.user_id)
    if user.disabled:
        raise OAuthError("invalid_grant", "the account is disabled")
    token = _issue(session, OAuthGrantKind.ACCESS, client, user, ACCESS_LIFETIME)
    return AccessToken(token, int(ACCESS_LIFETIME.total_seconds()))


def _end_access_tokens(session: Session, code: OAuthGrant) -> None:
    now = datetime.now(UTC)
    for token in session.scalars(select(OAuthGrant).where(
        OAuthGrant.kind == OAuthGrantKind.ACCESS, OAuthGrant.client_id == code.client_id,
        OAuthGrant.user_id == code.user_id, OAuthGrant.expires_at > now,
    )):
        token.expires_at = now


def user_for_access_token(session: Session, token: str) -> User | None:
    grant = session.scalar(select(OAuthGrant).where(OAuthGrant.secret_hash == _hash(token),
                                                    OAuthGrant.kind == OAuthGrantKind.ACCESS))
    if grant is None or as_utc(grant.expires_at) <= datetime.now(UTC):
        return None
    user = session.get_one(User, grant.user_id)
    return None if user.disabled else user


def userinfo(session: Session, user: User) -> dict[str, object]:
    """What the hub learns: the user's name and the projects they hold a role on."""
    projects = [project.name for project in list_projects(session) if accounts.role_on(session, user, project)]
    return {"name": user.username, "projects": projects}
