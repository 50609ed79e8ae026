"""XNAT's log-in, session and site routes, as its clients call them before anything else."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Blueprint, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException

from nifti_archive.errors import Forbidden
from nifti_archive.models import User
from portal import auth
from portal.access import Outcome
from portal.auth import csrf_exempt, logged_in, public
from portal.xnat import credentials

# The XNAT release whose REST API this surface follows; clients pick their code paths by it.
XNAT_VERSION = "1.8.0"
blueprint = Blueprint("xnat_session", __name__)
blueprint.before_request(credentials.authenticate)


def _text(body: str, status: int = 200) -> Response:
    return Response(body, status=status, mimetype="text/plain")


@blueprint.before_app_request
def _site_probe() -> Any:
    """XNAT clients first GET the site root to follow its redirects, and its alias-token log-in
    reads the session cookie from that answer. A browser (which asks for HTML) still gets the
    portal; a REST client gets a JSON pointer to the APIs instead of the log-in page."""
    if request.path != "/" or request.method != "GET" or request.args or "text/html" in request.accept_mimetypes.values():
        return None
    response = jsonify({"service": "northanc", "xnat": "/data", "api": "/api/v1"})
    presented = credentials.basic_credentials(request.headers.get("Authorization", ""))
    if presented is not None:
        try:
            credentials.authenticate()
        except HTTPException as refused:
            # Not a page: the caller is a REST client, which reads the API's error body.
            return auth.refusal(refused)
        credentials.open_session(response)
    return response


@blueprint.route("/data/JSESSION", methods=["GET"])
@logged_in
def jsession() -> Any:
    """The caller's session id (a new session for a caller who authenticated otherwise)."""
    current = request.cookies.get(credentials.SESSION_COOKIE)
    if current and "Authorization" not in request.headers:
        return _text(current)
    response = _text("")
    response.set_data(credentials.open_session(response))
    return response


@blueprint.route("/data/JSESSION", methods=["DELETE"])
@public
@csrf_exempt
def end_jsession() -> Any:
    """Ends the session the JSESSIONID cookie names (nothing to do without one)."""
    response = _text("")
    credentials.end_session(response)
    return response


@blueprint.route("/data/services/auth", methods=["PUT"])
@public
@csrf_exempt
def log_in() -> Any:
    """Form fields ``username`` and ``password`` (or a token as the password): a session id as text."""
    username, password = request.form.get("username", ""), request.form.get("password", "")
    with auth.archive().unit_of_work() as (work, _journal):
        proven = credentials.prove(work, username, password, auth.client_address()) if username and password else None
    if proven is None:
        raise auth.Denied(Outcome.UNAUTHENTICATED, "Login attempt failed: the user name and password are not valid here")
    g.user = auth.db().get_one(User, proven.user_id)
    g.xnat_token_id = proven.token_id
    response = _text("")
    response.set_data(credentials.open_session(response))
    return response


@blueprint.route("/data/auth", methods=["GET"])
@logged_in
def who() -> Any:
    user = auth.current_user()
    assert user is not None
    return _text(f"User '{user.username}' is logged in")


@blueprint.route("/data/services/tokens/issue", methods=["GET"])
@logged_in
def issue_token() -> Any:
    """An alias token: a user name (the alias) and secret to log in with instead of the password,
    for two days; kept, hashed, among the user's API tokens, where it can be revoked. Only a
    log-in with the password issues one: an alias that issued the next would outlive its two
    days for ever, and a job's token must not mint credentials beyond its run."""
    user = auth.current_user()
    if g.get("via_token") or g.get("xnat_token_id") is not None:
        raise Forbidden("a token cannot issue tokens: log in with the password")
    assert user is not None
    with auth.archive().unit_of_work() as (work, _journal):
        alias, issued = credentials.issue_alias(work, work.get_one(User, user.id))
    expires = datetime.now(UTC) + timedelta(days=credentials.ALIAS_DAYS)
    return jsonify({
        "alias": alias, "secret": issued.secret, "xdatUserId": user.username, "singleUse": False, "enabled": True,
        "estimatedExpirationTime": int(expires.timestamp() * 1000),
    })


@blueprint.route("/data/version", methods=["GET"])
@public
def version() -> Any:
    return _text(XNAT_VERSION)


@blueprint.route("/xapi/siteConfig/buildInfo", methods=["GET"])
@public
def build_info() -> Any:
    return jsonify({"version": XNAT_VERSION, "buildNumber": "northanc", "siteId": "northanc"})


@blueprint.route("/xapi/access/projects", methods=["GET"])
@logged_in
def access_levels() -> Any:
    """The caller's projects with their role, by XNAT's role names where they match."""
    return jsonify([{"ID": project.name, "role": role.value} for project, role in auth.projects_with_roles()])
