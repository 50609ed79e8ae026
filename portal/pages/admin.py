"""User and role administration: site admins manage users; project admins manage their members."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, flash, g, redirect, render_template, request, url_for

from nifti_archive import accounts
from nifti_archive.archive import get_project
from nifti_archive.catalog.projects import create_project
from nifti_archive.identity.linking import origin_label
from nifti_archive.models import Role
from portal.auth import archive, db, project_role, site_admin

blueprint = Blueprint("admin", __name__)


@blueprint.route("/admin/users")
@site_admin
def users() -> Any:
    # Accounts a provider vouches for have no password here: their origin says where to manage them.
    return render_template("users.html", users=accounts.list_users(db()), roles=accounts.list_roles(db()), origin=origin_label)


@blueprint.route("/admin/users", methods=["POST"])
@site_admin
def create_user() -> Any:
    with archive().unit_of_work() as (work, _journal):
        user, password = accounts.create_user(work, request.form.get("username", "").strip(), bool(request.form.get("site_admin")))
        name = user.username
    return render_template("one_time_password.html", username=name, password=password)


@blueprint.route("/admin/users/<username>/reset", methods=["POST"])
@site_admin
def reset_password(username: str) -> Any:
    with archive().unit_of_work() as (work, _journal):
        password = accounts.reset_password(work, username)
    return render_template("one_time_password.html", username=username, password=password)


@blueprint.route("/admin/users/<username>/disabled", methods=["POST"])
@site_admin
def set_disabled(username: str) -> Any:
    disabled = request.form.get("disabled") == "1"
    with archive().unit_of_work() as (work, _journal):
        accounts.set_disabled(work, username, disabled)
    flash(f"{username} {'disabled' if disabled else 'enabled'}")
    return redirect(url_for("admin.users"))


@blueprint.route("/admin/projects", methods=["POST"])
@site_admin
def new_project() -> Any:
    with archive().unit_of_work() as (work, journal):
        project = create_project(work, journal, archive().layout, request.form.get("name", "").strip(), request.form.get("description", ""))
        name = project.name
    flash(f"project {name} created")
    return redirect(url_for("projects.table", project=name))


@blueprint.route("/p/<project>/members")
@project_role(Role.ADMIN)
def members(project: str) -> Any:
    return render_template("members.html", roles=accounts.list_roles(db(), g.project), all_roles=[r.value for r in Role])


@blueprint.route("/p/<project>/members", methods=["POST"])
@project_role(Role.ADMIN)
def set_member(project: str) -> Any:
    username = request.form.get("username", "").strip()
    with archive().unit_of_work() as (work, _journal):
        user, record = accounts.get_user(work, username), get_project(work, project)
        if request.form.get("role") == "none":
            accounts.revoke_role(work, user, record)
        else:
            accounts.grant_role(work, user, record, accounts.parse_role(request.form.get("role", "")))
    flash(f"role of {username} on {project} updated")
    return redirect(url_for("admin.members", project=project))
