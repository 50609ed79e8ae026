"""Pages: readings (controlled reader studies): the list, the form designer, a reading's configuration,
the reading itself and its results.

The pages carry no data of a reading: their scripts ask the readings API (portal/api/readings.py),
which decides who sees what. In particular the reading page gets only the reading's id, so that
nothing blinded (patient, study, date) can reach it other than through the slot the API answers.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, g, render_template

from nifti_archive.models import Role
from nifti_archive.query.filter_sql import Column
from portal.access import may_see_identity
from portal.auth import project_role

blueprint = Blueprint("readings", __name__)


@blueprint.route("/p/<project>/readings")
@project_role(Role.READER)
def index(project: str) -> Any:
    return render_template("readings.html", can_configure=g.role.allows(Role.ADMIN))


@blueprint.route("/p/<project>/readings/forms/<name>")
@project_role(Role.ADMIN)
def form_designer(project: str, name: str) -> Any:
    return render_template("reading_form_designer.html", name=name)


@blueprint.route("/p/<project>/readings/new")
@project_role(Role.ADMIN)
def new(project: str) -> Any:
    return _configuration_page(None)


@blueprint.route("/p/<project>/readings/<int:reading_id>/configure")
@project_role(Role.ADMIN)
def configure(project: str, reading_id: int) -> Any:
    return _configuration_page(reading_id)


def _configuration_page(reading_id: int | None) -> Any:
    # The filter bars of the studies table; the name bar only where this admin may see names there.
    identity = may_see_identity(g.project, g.role)
    bars = [c.value for c in Column if identity or c is not Column.PATIENT_NAME]
    return render_template("reading_configure.html", reading_id=reading_id, bars=bars)


@blueprint.route("/p/<project>/readings/<int:reading_id>/read")
@project_role(Role.READER)
def read(project: str, reading_id: int) -> Any:
    return render_template("reading.html", reading_id=reading_id)


@blueprint.route("/p/<project>/readings/<int:reading_id>/results")
@project_role(Role.READER)
def results(project: str, reading_id: int) -> Any:
    return render_template("reading_results.html", reading_id=reading_id, is_admin=g.role.allows(Role.ADMIN))
