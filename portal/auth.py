"""Who is calling: session cookie or API token; CSRF for cookie callers; the access decorators.

Every view carries one of the decorators below; ``access.decide`` makes the decision and the
decorator records the rule on the view (``access_rule``) so the rights test can find every
route's declared rule. Browsers authenticate with the session cookie, which is why unsafe
methods from them need the CSRF token; scripts send ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import functools
import hmac
import secrets
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar, cast, overload

from flask import current_app, g, jsonify, redirect, request, session, url_for
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.exceptions import HTTPException

from nifti_archive import accounts, user_sessions
from nifti_archive.archive import Archive
from nifti_archive.catalog.projects import list_projects
from nifti_archive.models import Project, Role, User
from portal.access import Caller, Outcome, Rule, Scope, TokenScope, decide, decide_scoped, scoped_role

View = TypeVar("View", bound=Callable[..., Any])
# Resolves the project a route acts on from its URL arguments; None when nothing matches.
ProjectResolver = Callable[[Session, dict[str, Any]], Project | None]
UNSAFE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
# The cookie's secret naming the server-side session (``user_sessions``).
SESSION_FIELD = "sid"


class Denied(HTTPException):
    """An access decision other than ALLOW, rendered as JSON for the API and as a page otherwise."""

    def __init__(self, outcome: Outcome, message: str) -> None:
        super().__init__(message)
        self.code = outcome.value
        self.outcome = outcome


def archive() -> Archive:
    return cast(Archive, current_app.extensions["northanc.archive"])


def db() -> Session:
    """The request's read session (writes go through ``archive().unit_of_work()``)."""
    if "db" not in g:
        g.db = archive().read_sessions()
    return cast(Session, g.db)


def close_db(_error: BaseException | None = None) -> None:
    session = g.pop("db", None)
    if session is not None:
        session.close()


# Paths where every answer, errors included, is JSON: our REST API and the XNAT-compatible one.
API_PREFIXES = ("/api/", "/data/", "/xapi/")


def is_api() -> bool:
    return request.path.startswith(API_PREFIXES) or request.path in ("/data", "/xapi")


def _bearer() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, secret = header.partition(" ")
    return secret.strip() if scheme.lower() == "bearer" and secret.strip() else None


def client_address() -> str:
    # A Unix-socket client has no address; all of them share one throttle key.
    return request.remote_addr or "local"


def scope_of(project_id: int | None, user: User | None) -> TokenScope | None:
    if project_id is None or user is None:
        return None
    return TokenScope(project_id, for_service=user.username == archive().settings.jobs_user)


def current_user() -> User | None:
    """The caller: a Bearer token, else the server-side session the cookie names.

    Both are read in the request's read session, with the user's grants; a write transaction is
    opened only when the last use is due to be recorded (once a minute)."""
    if "user" in g:
        return cast(User | None, g.user)
    g.via_token, g.token_scope = False, None
    found: user_sessions.Authenticated | None = None
    secret = _bearer()
    if secret is not None:
        found = accounts.token_caller(db(), secret)
        if found is None:
            raise Denied(Outcome.UNAUTHENTICATED, "the API token is unknown, revoked or expired")
        if found.use_due:
            with archive().unit_of_work() as (work, _journal):
                accounts.record_token_use(work, secret)
        g.via_token = True
    elif SESSION_FIELD in session:
        lifetime, cookie = timedelta(hours=archive().settings.session_hours), str(session[SESSION_FIELD])
        found = user_sessions.session_caller(db(), cookie, lifetime)
        if found is None:
            session.clear()
        elif found.use_due:
            with archive().unit_of_work() as (work, _journal):
                user_sessions.record_seen(work, cookie)
    g.user = found.user if found else None
    g.grants = (found.user.id, found.grants) if found else None
    g.token_scope = scope_of(found.token_project_id if found else None, g.user)
    return cast(User | None, g.user)


def role_on(project: Project) -> Role | None:
    """The caller's role on a project, as far as the token it came with reaches."""
    user = current_user()
    if user is None:
        return None
    # Read with the caller; a user proven elsewhere (XNAT's basic credentials, a log-in during
    # this request) has none read yet.
    read: tuple[int, dict[int, Role]] | None = g.get("grants")
    if read is not None and read[0] == user.id:
        held = accounts.effective_role(user, read[1].get(project.id))
    else:
        held = accounts.role_on(db(), user, project)
    scope: TokenScope | None = g.token_scope
    return scoped_role(scope, project.id, held) if scope else held


def projects_with_roles() -> list[tuple[Project, Role]]:
    """The projects the caller has a role on, with that role, by name."""
    held = ((project, role_on(project)) for project in list_projects(db()))
    return [(project, role) for project, role in held if role is not None]


def log_in(user: User, token_id: int | None = None) -> None:
    """A new server-side session for the user (opened with ``token_id`` for NORA's URL call).

    A fresh identifier on every log-in: one planted before it is worth nothing after; the
    session it replaces ends.
    """
    with archive().unit_of_work() as (work, _journal):
        if SESSION_FIELD in session:
            user_sessions.end_session(work, str(session[SESSION_FIELD]))
        secret = user_sessions.open_session(work, user.id, client_address(), token_id)
    session.clear()
    session.permanent = True
    session[SESSION_FIELD] = secret
    session[CSRF_FIELD] = secrets.token_urlsafe(32)
    g.user, g.via_token, g.token_scope = user, False, None


def log_out() -> None:
    if SESSION_FIELD in session:
        with archive().unit_of_work() as (work, _journal):
            user_sessions.end_session(work, str(session[SESSION_FIELD]))
    session.clear()
    g.user = None


def csrf_token() -> str:
    if CSRF_FIELD not in session:
        session[CSRF_FIELD] = secrets.token_urlsafe(32)
    return str(session[CSRF_FIELD])


def check_csrf() -> None:
    """Unsafe requests carried by the session cookie must prove they come from our pages."""
    if request.method not in UNSAFE_METHODS or _bearer() is not None:
        return
    sent = request.headers.get(CSRF_HEADER) or request.form.get(CSRF_FIELD, "")
    expected = session.get(CSRF_FIELD, "")
    if not expected or not hmac.compare_digest(str(sent), str(expected)):
        raise Denied(Outcome.FORBIDDEN, "the form is stale or did not come from this site (CSRF token missing); reload the page")


def _enforce(rule: Rule, project: Project | None, allow_stale_password: bool = False) -> None:
    user = current_user()
    role = role_on(project) if (user and project) else None
    caller = Caller(user is not None, bool(user and user.is_site_admin), role)
    scoped = g.token_scope is not None
    outcome = decide_scoped(rule, caller, is_api()) if scoped else decide(rule, caller)
    if outcome is Outcome.FORBIDDEN and scoped:
        raise Denied(outcome, "a project-scoped token (a job's) may only call its own project's REST API, as at most an editor")
    if outcome is Outcome.ALLOW and user and user.must_change_password and not g.via_token and not allow_stale_password:
        if is_api():
            raise Denied(Outcome.FORBIDDEN, "set a new password first (your password is a one-time one)")
        raise LoginRedirect(url_for("account.password"))
    if outcome is Outcome.UNAUTHENTICATED and not is_api():
        raise LoginRedirect(url_for("account.login", next=request.full_path))
    refuse_unless_allowed(outcome, rule)
    g.project, g.role = project, role


def refuse_unless_allowed(outcome: Outcome, rule: Rule) -> None:
    """Answer an access decision other than ALLOW: 404 naming nothing, 403 naming the rule, or 401."""
    if outcome is Outcome.HIDDEN:
        raise Denied(outcome, "no such project, or you have no role on it")
    if outcome is Outcome.FORBIDDEN:
        raise Denied(outcome, f"this needs {rule.describe()}")
    if outcome is Outcome.UNAUTHENTICATED:
        raise Denied(outcome, "log in, or send an API token (Authorization: Bearer ...)")


def authorize(user: User, project: Project | None, role: Role) -> Project:
    """The project, once ``decide`` lets ``user`` act with ``role`` on it: for a call that proves
    its user itself (NORA's scripted upload) rather than through the request's session or token."""
    rule = Rule(Scope.PROJECT, role)
    held = accounts.role_on(db(), user, project) if project else None
    refuse_unless_allowed(decide(rule, Caller(True, user.is_site_admin, held)), rule)
    assert project is not None, "decide hides a project nobody holds a role on"
    return project


class LoginRedirect(HTTPException):
    code = 302

    def __init__(self, location: str) -> None:
        super().__init__()
        self.location = location

    def get_response(self, environ: Any = None, scope: Any = None) -> Any:
        return redirect(self.location)


def _declare(rule: Rule, view: View, check: Callable[[dict[str, Any]], None]) -> View:
    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        # Access first, so a stranger learns "log in" or "not found", not "stale form".
        check(kwargs)
        if getattr(view, "refused_to_job_tokens", False) and g.get("token_scope") is not None:
            raise Denied(Outcome.FORBIDDEN, "a job's token cannot start or change batches: jobs do not launch jobs")
        if not getattr(view, "csrf_exempt", False):
            check_csrf()
        return view(*args, **kwargs)

    wrapper.access_rule = rule  # type: ignore[attr-defined]  # a mark on the function object that rights tests read
    return cast(View, wrapper)


def refused_to_job_tokens(view: View) -> View:
    """For a route that starts work (a launch, a rerun, a batch a launch may name): a job's own
    token must not, or one job could start others past every time limit and revocation."""
    view.refused_to_job_tokens = True  # type: ignore[attr-defined]  # a mark on the function object that _declare reads
    return view


def csrf_exempt(view: View) -> View:
    """For a route that never reads the session cookie (it authenticates each call itself)."""
    view.csrf_exempt = True  # type: ignore[attr-defined]  # a mark on the function object that _declare reads
    return view


def public(view: View) -> View:
    return _declare(Rule(Scope.PUBLIC), view, lambda _kwargs: None)


@overload
def logged_in(view: View) -> View: ...


@overload
def logged_in(*, allow_stale_password: bool = False) -> Callable[[View], View]: ...


def logged_in(view: View | None = None, *, allow_stale_password: bool = False) -> View | Callable[[View], View]:
    """Any logged-in user; ``allow_stale_password`` for the page where a one-time password is replaced."""

    def decorate(inner: View) -> View:
        return _declare(Rule(Scope.USER), inner, lambda _kwargs: _enforce(Rule(Scope.USER), None, allow_stale_password))

    return decorate(view) if view is not None else decorate


def site_admin(view: View) -> View:
    rule = Rule(Scope.SITE_ADMIN)
    return _declare(rule, view, lambda _kwargs: _enforce(rule, None))


def project_by_name(session: Session, kwargs: dict[str, Any]) -> Project | None:
    return session.scalar(select(Project).where(Project.name == kwargs["project"]))


def project_role(role: Role, via: ProjectResolver = project_by_name) -> Callable[[View], View]:
    """The view needs ``role`` on the project its URL names (by name, or through an id ``via`` resolves)."""
    rule = Rule(Scope.PROJECT, role)

    def decorate(view: View) -> View:
        return _declare(rule, view, lambda kwargs: _enforce(rule, via(db(), kwargs)))

    return decorate


def error_response(status: int, message: str, **extra: Any) -> Any:
    """The API's error body: ``{"error": message, ...}`` with the status."""
    response = jsonify({"error": message, **extra})
    response.status_code = status
    return response


def refusal(error: HTTPException, message: str | None = None) -> Any:
    """An HTTP error as the API's error body; when to come back (a throttled log-in's 429) stays a header."""
    response = error_response(error.code or 500, message or error.description or error.name)
    response.headers.extend((name, value) for name, value in error.get_headers() if name == "Retry-After")
    return response
