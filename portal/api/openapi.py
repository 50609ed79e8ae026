"""The API's OpenAPI description, built from the registered routes so it cannot drift from them.

Each ``/api/v1`` route contributes its path, methods, path parameters, the first line of its
view's docstring as summary, and the access rule its decorator declared.
"""

from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, current_app, jsonify

from portal.auth import public

blueprint = Blueprint("openapi", __name__, url_prefix="/api/v1")
API_PREFIX = "/api/v1"
_PARAMETER = re.compile(r"<(?:(\w+):)?(\w+)>")
_TYPES = {"int": {"type": "integer"}, None: {"type": "string"}, "string": {"type": "string"}, "path": {"type": "string"}}


def describe(rules: Any, views: dict[str, Any]) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for rule in sorted(rules, key=lambda r: r.rule):
        if not rule.rule.startswith(API_PREFIX):
            continue
        view = views[rule.endpoint]
        path = _PARAMETER.sub(lambda m: "{" + m.group(2) + "}", rule.rule)
        parameters = [
            {"name": name, "in": "path", "required": True, "schema": _TYPES.get(kind, {"type": "string"})}
            for kind, name in _PARAMETER.findall(rule.rule)
        ]
        access = getattr(view, "access_rule", None)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            paths.setdefault(path, {})[method.lower()] = {
                "summary": (view.__doc__ or "").strip().splitlines()[0] if view.__doc__ else rule.endpoint,
                "operationId": rule.endpoint.replace(".", "_") + ("" if method == "GET" else "_" + method.lower()),
                "parameters": parameters,
                "x-access": access.describe() if access else "undeclared",
                "responses": {
                    "200": {"description": "success (201/202 where something was created or queued)"},
                    "400": {"description": "invalid input, with {\"error\": message}"},
                    "401": {"description": "no valid session or API token"},
                    "403": {"description": "the caller's role on the project is too low"},
                    "404": {"description": "unknown, or in a project the caller has no role in"},
                },
            }
    return {
        "openapi": "3.0.3",
        "info": {"title": "Northanc API", "version": "1"},
        "components": {"securitySchemes": {
            "token": {"type": "http", "scheme": "bearer", "description": "a personal API token (account page)"},
            "session": {"type": "apiKey", "in": "cookie", "name": "northanc_session"},
        }},
        "security": [{"token": []}, {"session": []}],
        "paths": paths,
    }


@blueprint.route("/openapi.json")
@public
def openapi() -> Any:
    """This description."""
    return jsonify(describe(current_app.url_map.iter_rules(), current_app.view_functions))
