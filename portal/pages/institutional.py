"""Log-in through the institution: OpenID Connect providers and LDAP directories.

The OIDC state, nonce and PKCE verifier wait in the signed session cookie between the redirect
to the provider and its callback, and are taken out at the callback whatever it brings, so each
is good for one answer. Accounts and roles are decided by ``nifti_archive.identity``; the
session that follows is the same server-side session a local log-in opens.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, redirect, render_template, request, session, url_for

from nifti_archive import accounts
from nifti_archive.errors import ConfigError, ServiceUnavailable
from nifti_archive.identity import ldap, linking, oidc
from nifti_archive.identity.config import AccountPolicy, RoleMapping
from nifti_archive.models import User
from portal.auth import archive, client_address, db, log_in, public
from portal.pages.login_page import WRONG_PASSWORD, login_page, safe_next, throttled_page

log = logging.getLogger(__name__)
blueprint = Blueprint("institutional", __name__)
PENDING_FIELD = "oidc_pending"
# The OIDC provider the session's user logged in through, for RP-initiated log-out.
PROVIDER_FIELD = "oidc_provider"


@blueprint.route("/login/oidc", methods=["GET"])
@public
def oidc_begin() -> Any:
    """Off to the provider's log-in, with a fresh state, nonce and PKCE challenge."""
    next_url = safe_next(request.args.get("next"))
    provider = archive().settings.identity.oidc_named(request.args.get("provider", ""))
    if provider is None:
        return login_page(next_url, "no such log-in provider on this site", 400)
    try:
        url, pending = oidc.begin(provider, url_for("institutional.oidc_callback", _external=True), next_url)
    except ServiceUnavailable as exc:
        return login_page(next_url, f"{provider.label}: {exc}", 503)
    session[PENDING_FIELD] = pending.as_dict()
    return redirect(url)


@blueprint.route("/login/oidc/callback", methods=["GET"])
@public
def oidc_callback() -> Any:
    raw = session.pop(PENDING_FIELD, None)
    pending = oidc.PendingLogin.from_dict(raw) if isinstance(raw, dict) else None
    if pending is None or request.args.get("state") != pending.state:
        return login_page("", "this log-in did not start here or has already been used; log in again", 400)
    provider = archive().settings.identity.oidc_named(pending.provider)
    if provider is None:
        return login_page(pending.next, "no such log-in provider on this site", 400)
    if "error" in request.args or "code" not in request.args:
        reason = request.args.get("error_description") or request.args.get("error") or "no authorisation code"
        return login_page(pending.next, f"{provider.label} did not log you in: {reason[:200]}", 400)
    try:
        secret = archive().settings.read_secret(provider.client_secret_file)
        identity = oidc.finish(provider, secret, pending, url_for("institutional.oidc_callback", _external=True),
                               request.args["code"])
    except ServiceUnavailable as exc:
        return login_page(pending.next, f"{provider.label}: {exc}", 503)
    except (oidc.InvalidIdToken, ConfigError) as exc:
        log.warning("OpenID Connect log-in through %s refused: %s", provider.name, exc)
        return login_page(pending.next, f"{provider.label}: the log-in could not be verified", 400)
    signed_in = _sign_in(identity, provider.accounts, provider.roles, pending.next)
    if isinstance(signed_in, tuple):
        return signed_in
    session[PROVIDER_FIELD] = provider.name
    return redirect(pending.next)


@blueprint.route("/login/ldap", methods=["POST"])
@public
def ldap_login() -> Any:
    """Bind to the directory as the user; wrong names and passwords are counted as the local form's are."""
    next_url = safe_next(request.form.get("next"))
    directory = archive().settings.identity.ldap_named(request.form.get("directory", ""))
    if directory is None:
        return login_page(next_url, "no such directory on this site", 400)
    username = request.form.get("username", "")
    with archive().unit_of_work() as (work, _journal):
        # The directory matches names whatever their case: "Ann" and "ANN" are guesses at ann's
        # password, and count as such, or each spelling would bring a fresh set of free tries.
        attempt = accounts.begin_attempt(work, username.lower(), client_address())
    if attempt.throttled is not None:
        return throttled_page(attempt.throttled, next_url)
    try:
        identity = ldap.authenticate(directory, username, request.form.get("password", ""))
    except ServiceUnavailable as exc:
        return login_page(next_url, str(exc), 503)
    if identity is None:
        with archive().unit_of_work() as (work, _journal):
            accounts.attempt_failed(work, attempt)
        return login_page(next_url, WRONG_PASSWORD, 401)
    signed_in = _sign_in(identity, directory.accounts, directory.roles, next_url)
    if isinstance(signed_in, tuple):
        return signed_in
    with archive().unit_of_work() as (work, _journal):
        accounts.attempt_succeeded(work, attempt, signed_in)
    return redirect(next_url)


def _sign_in(identity: linking.ExternalIdentity, policy: AccountPolicy, roles: RoleMapping, next_url: str) -> int | tuple[str, int]:
    """The session for the identity's account (its id), or the log-in page saying why not."""
    try:
        with archive().unit_of_work() as (work, _journal):
            user_id = linking.sign_in(work, identity, policy, roles).id
    except linking.LoginRefused as exc:
        log.info("log-in of %s through %s refused: %s", identity.username, identity.provider, exc)
        return login_page(next_url, str(exc), 403)
    log_in(db().get_one(User, user_id))
    return user_id


def provider_log_out() -> str | None:
    """A page that sends the browser on to end the provider's session too, when the session's
    user logged in through a provider that offers RP-initiated log-out.

    A page rather than a redirect: the log-out form's own policy (form-action 'self') forbids
    its answer to redirect to another site.
    """
    provider = archive().settings.identity.oidc_named(str(session.get(PROVIDER_FIELD, "")))
    url = oidc.end_session_url(provider, url_for("account.login", _external=True)) if provider else None
    return render_template("provider_logout.html", url=url, label=provider.label) if provider and url else None
