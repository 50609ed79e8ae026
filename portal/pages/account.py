"""Logging in and out, one's own password, and one's API tokens."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, flash, redirect, render_template, request, session, url_for

from nifti_archive import accounts, user_sessions
from nifti_archive.errors import InvalidValue, NotFound
from nifti_archive.models import ApiToken, User, utcnow
from portal.access import Outcome
from portal.api.archive import CallIdentity
from portal.auth import Denied, archive, client_address, current_user, db, log_in, log_out, logged_in, public
from portal.pages import institutional
from portal.pages.login_page import WRONG_PASSWORD, login_page, safe_next, throttled_page

blueprint = Blueprint("account", __name__)
# A NORA URL call for another user than the one logged in, waiting for the owner's answer.
PENDING_SWITCH = "pending_switch"


@blueprint.route("/login", methods=["GET", "POST"])
@public
def login() -> Any:
    if request.method == "GET":
        return login_page(request.args.get("next", ""))
    next_url = request.form.get("next", "")
    if not archive().settings.local_login:
        return login_page(next_url, "this site's accounts log in through their institution only", 403)
    with archive().unit_of_work() as (work, _journal):
        result = accounts.check_login(work, request.form.get("username", ""), request.form.get("password", ""), client_address())
    if result.outcome is accounts.LoginOutcome.THROTTLED:
        return throttled_page(result, next_url)
    if result.user_id is None:
        return login_page(next_url, WRONG_PASSWORD, 401)
    log_in(db().get_one(User, result.user_id))
    return redirect(safe_next(request.form.get("next")))


@blueprint.route("/logout", methods=["POST"])
@public
def logout() -> Any:
    # Asked before the session ends: it names the provider the user logged in through.
    provider_log_out = institutional.provider_log_out()
    log_out()
    return provider_log_out or redirect(url_for("account.login"))


@blueprint.route("/account/password", methods=["GET", "POST"])
@logged_in(allow_stale_password=True)
def password() -> Any:
    user = current_user()
    assert user is not None
    if request.method == "GET":
        return render_template("password.html", forced=user.must_change_password)
    new = request.form.get("new_password", "")
    if new != request.form.get("repeat_password", ""):
        return render_template("password.html", forced=user.must_change_password, error="the two passwords differ"), 400
    with archive().unit_of_work() as (work, _journal):
        record = work.get_one(User, user.id)
        if not accounts.verify_password(record, request.form.get("current_password", "")):
            error = "the current password is wrong"
            return render_template("password.html", forced=user.must_change_password, error=error), 400
        try:
            accounts.set_password(record, new)
        except InvalidValue as exc:
            return render_template("password.html", forced=user.must_change_password, error=str(exc)), 400
        # A new password ends every session, this one too; log_in below opens a fresh one here.
        user_sessions.end_user_sessions(work, record.id)
    db().expire_all()
    log_in(db().get_one(User, user.id))
    flash("password changed")
    return redirect(url_for("projects.index"))


@blueprint.route("/account/tokens", methods=["GET", "POST"])
@logged_in
def tokens() -> Any:
    user = current_user()
    assert user is not None
    issued = None
    if request.method == "POST":
        days = request.form.get("expires_in_days", "").strip()
        try:
            lifetime = int(days) if days else None
        except ValueError:
            raise InvalidValue("the lifetime is a whole number of days") from None
        name = request.form.get("name", "").strip() or "token"
        with archive().unit_of_work() as (work, _journal):
            issued = accounts.create_token(work, work.get_one(User, user.id), name[:128], lifetime).secret
    return render_template("tokens.html", tokens=accounts.list_tokens(db(), user), issued=issued)


@blueprint.route("/account/tokens/<int:token_id>/revoke", methods=["POST"])
@logged_in
def revoke(token_id: int) -> Any:
    user = current_user()
    assert user is not None
    with archive().unit_of_work() as (work, _journal):
        if token_id not in {t.id for t in accounts.list_tokens(work, user)}:
            raise NotFound(f"you have no token {token_id}")
        accounts.revoke_token(work, token_id)
    flash("token revoked")
    return redirect(url_for("account.tokens"))


def ask_to_switch(identity: CallIdentity, target: str) -> str:
    """Keep a URL call for another user until the session's owner answers; the URL to ask at."""
    session[PENDING_SWITCH] = {"user_id": identity.user_id, "token_id": identity.token_id, "next": safe_next(target)}
    return url_for("account.switch_user")


@blueprint.route("/account/switch", methods=["GET", "POST"])
@logged_in
def switch_user() -> Any:
    """Confirm (POST) or decline replacing this session with the one a URL call asked for."""
    pending = session.get(PENDING_SWITCH)
    if not isinstance(pending, dict):
        flash("no log-in is waiting for your answer")
        return redirect(url_for("projects.index"))
    if request.method == "GET":
        return render_template("switch_user.html", username=db().get_one(User, pending["user_id"]).username)
    session.pop(PENDING_SWITCH)
    if request.form.get("answer") != "switch":
        return redirect(url_for("projects.index"))
    with archive().unit_of_work() as (work, _journal):
        token = work.get(ApiToken, pending["token_id"])
        live = token is not None and token.is_live(utcnow()) and not token.user.disabled
    if not live:
        raise Denied(Outcome.UNAUTHENTICATED, "the link's token was revoked or has expired")
    log_in(db().get_one(User, pending["user_id"]), pending["token_id"])
    return redirect(pending["next"])
