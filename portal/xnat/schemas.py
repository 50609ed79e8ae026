"""The XML schemas XNAT clients read to learn the types served (xnatpy builds its classes from
them): one, ``xnat``, written for this archive's subset of XNAT's model (xnat.xsd beside this).
XNAT's search service is not served: its list of searchable types is empty."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Blueprint, Response, jsonify

from nifti_archive.errors import NotFound
from portal.auth import logged_in, public
from portal.xnat import credentials
from portal.xnat.results import result_set

SCHEMAS = {"xnat": Path(__file__).with_name("xnat.xsd")}
blueprint = Blueprint("xnat_schemas", __name__)
blueprint.before_request(credentials.authenticate)


@blueprint.route("/xapi/schemas")
@public
def schema_names() -> Any:
    return jsonify(sorted(SCHEMAS))


@blueprint.route("/xapi/schemas/<name>")
@public
def schema(name: str) -> Any:
    path = SCHEMAS.get(name)
    if path is None:
        raise NotFound(f"no schema {name[:40]!r} here; the schemas are {', '.join(sorted(SCHEMAS))}")
    return Response(path.read_bytes(), mimetype="application/xml")


@blueprint.route("/data/search/elements")
@logged_in
def search_elements() -> Any:
    return jsonify(result_set([], "Searchable types"))
