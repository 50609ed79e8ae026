"""How XNAT clients prove who they are: HTTP basic (a password, an API token or an alias token
as the password), the ``JSESSIONID`` cookie that ``/data/JSESSION`` hands out, or a bearer token.

The portal's own session cookie is not taken on these paths: their routes take PUTs without the
CSRF token the portal's pages send. That is safe because a page of another site cannot make a
browser send these credentials with a PUT (forms cannot PUT; a script's PUT needs CORS, which
is not offered) and the JSESSIONID cookie is SameSite=Strict besides.
"""

from __future__ import annotations

import base64
import binascii
import math
import uuid
from dataclasses import dataclass
from datetime import timedelta

from flask import g, request
from flask.wrappers import Response
from sqlalchemy.orm import Session
from werkzeug.exceptions import TooManyRequests

from nifti_archive import accounts, user_sessions
from nifti_archive.models import TokenKind, User
from portal import auth
from portal.access import Outcome

SESSION_COOKIE = "JSESSIONID"
# An alias token is one of the user's API tokens, of the alias kind; its alias, kept in its name,
# is the user name XNAT clients send with it.
ALIAS_NAME = "xnat alias "
ALIAS_DAYS = 2


@dataclass(frozen=True)
class Proven:
    user_id: int
    token_id: int | None
    scope_project: int | None


def basic_credentials(header: str) -> tuple[str, str] | None:
    """(user, password) of an ``Authorization: Basic`` header; None for another scheme or a garbled one."""
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, colon, password = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, password) if colon else None


def is_alias(name: str) -> bool:
    try:
        return str(uuid.UUID(name)) == name.lower()
    except ValueError:
        return False


def prove(work: Session, username: str, password: str, address: str) -> Proven | None:
    """The account behind a user name and password, where the password may also be one of the
    user's API tokens, or the secret of an alias token whose alias is the user name."""
    token = accounts.valid_token(work, password) if password.startswith("nrt_") else None
    if token is not None:
        owner = work.get_one(User, token.user_id)
        if owner.username == username or (token.kind is TokenKind.ALIAS and token.name == ALIAS_NAME + username.lower()):
            return Proven(token.user_id, token.id, token.project_id)
        return None
    # A site that switched the local form off logs people in through their institution only:
    # a local password must not open the archive through XNAT's door either. Tokens still do.
    if is_alias(username) or not auth.archive().settings.local_login:
        return None
    result = accounts.check_login(work, username, password, address)
    if result.outcome is accounts.LoginOutcome.THROTTLED:
        # As the log-in page answers: a client told to wait does not mistake it for a wrong password.
        seconds = max(1, math.ceil(result.retry_after.total_seconds()))
        raise TooManyRequests(f"too many wrong passwords: try again in {seconds} seconds", retry_after=seconds)
    return Proven(result.user_id, None, None) if result.outcome is accounts.LoginOutcome.OK and result.user_id else None


def issue_alias(work: Session, user: User) -> tuple[str, accounts.IssuedToken]:
    alias = str(uuid.uuid4())
    return alias, accounts.create_token(work, user, ALIAS_NAME + alias, ALIAS_DAYS, TokenKind.ALIAS)


def _adopt(proven: Proven | None, via_token: bool) -> None:
    user = auth.db().get(User, proven.user_id) if proven else None
    g.user, g.via_token = user, via_token
    g.token_scope = auth.scope_of(proven.scope_project, user) if proven else None
    g.xnat_token_id = proven.token_id if proven else None


def _from_cookie(secret: str) -> Proven | None:
    lifetime = timedelta(hours=auth.archive().settings.session_hours)
    with auth.archive().unit_of_work() as (work, _journal):
        live = user_sessions.live_session(work, secret, lifetime)
        return Proven(live.user_id, live.token_id, live.token_project_id) if live else None


def authenticate() -> None:
    """Who calls an XNAT path, before its access rule is decided; wrong basic credentials are a 401."""
    if request.headers.get("Authorization", "").lower().startswith("bearer "):
        return  # the portal's token handling (auth.current_user) takes it
    credentials = basic_credentials(request.headers.get("Authorization", ""))
    if credentials is not None:
        with auth.archive().unit_of_work() as (work, _journal):
            proven = prove(work, *credentials, auth.client_address())
        if proven is None:
            raise auth.Denied(Outcome.UNAUTHENTICATED, "the user name and password (or token) are not valid here")
        _adopt(proven, proven.token_id is not None)
        return
    cookie = request.cookies.get(SESSION_COOKIE)
    _adopt(_from_cookie(cookie) if cookie else None, via_token=False)


def open_session(response: Response) -> str:
    """A server-side session for the authenticated caller, named by a JSESSIONID cookie on ``response``."""
    user = auth.current_user()
    assert user is not None, "only an authenticated caller gets a session"
    with auth.archive().unit_of_work() as (work, _journal):
        secret = user_sessions.open_session(work, user.id, auth.client_address(), g.get("xnat_token_id"))
    # Secure as the portal's own cookie is: behind a TLS-terminating proxy the request reaching
    # us is plain HTTP, and the cookie must still never travel without TLS. A site serving plain
    # HTTP to scripts switches secure_cookies off, as it must for the portal.
    response.set_cookie(SESSION_COOKIE, secret, httponly=True, samesite="Strict", path="/",
                        secure=auth.archive().settings.secure_cookies,
                        max_age=auth.archive().settings.session_hours * 3600)
    return secret


def end_session(response: Response) -> None:
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        with auth.archive().unit_of_work() as (work, _journal):
            user_sessions.end_session(work, cookie)
    response.delete_cookie(SESSION_COOKIE, path="/")
