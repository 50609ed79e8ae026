"""Logging in and out, one's own password, and one's API tokens."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, flash, redirect, render_template, request, session, url_for

from nifti_archive import accounts
from nifti_archive.errors import InvalidValue, NotFound
from nifti_archive.models import User

from .auth import archive, current_user, db, log_in, logged_in, public

blueprint = Blueprint("account", __name__)


def _safe_next(target: str | None) -> str:
    """Only a path on this site: a crafted ``next`` must not send a user elsewhere after log-in."""
    if not target:
        return url_for("projects.index")
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return url_for("projects.index")
    return target


@blueprint.route("/login", methods=["GET", "POST"])
@public
def login() -> Any:
    if request.method == "GET":
        return render_template("login.html", next=request.args.get("next", ""))
    username = request.form.get("username", "")
    with archive().unit_of_work() as (work, _journal):
        try:
            user = accounts.get_user(work, username)
        except NotFound:
            user = None
        outcome = accounts.check_login(user, request.form.get("password", ""))
        user_id = user.id if (user and outcome is accounts.LoginOutcome.OK) else None
    if outcome is accounts.LoginOutcome.LOCKED:
        error = f"too many wrong passwords: log-ins to this account are refused for {accounts.LOCKOUT.seconds // 60} minutes"
        return render_template("login.html", next=request.form.get("next", ""), error=error), 429
    if user_id is None:
        return render_template("login.html", next=request.form.get("next", ""), error="wrong user name or password"), 401
    log_in(db().get_one(User, user_id))
    return redirect(_safe_next(request.form.get("next")))


@blueprint.route("/logout", methods=["POST"])
@public
def logout() -> Any:
    session.clear()
    return redirect(url_for("account.login"))


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
