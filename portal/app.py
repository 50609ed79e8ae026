"""The portal's application factory.

``create_app()`` reads the one settings object (environment and config file), opens the
archive, and registers one blueprint per area. Gunicorn serves it in production
(``portal.serve``); tests call the factory with their own settings.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path
from typing import Any

from flask import Flask, render_template, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.middleware.proxy_fix import ProxyFix

from nifti_archive.archive import Archive
from nifti_archive.errors import ArchiveError, Conflict, FilterSyntaxError, Forbidden, NotFound, ServiceUnavailable
from nifti_archive.orthanc_api import OrthancUnavailable
from nifti_archive.pacs.peers import PacsError
from nifti_archive.settings import Settings, load_settings
from portal import api, auth, headers, ids, pages, xnat

log = logging.getLogger(__name__)
FRONTEND = Path(__file__).parent / "frontend"
BLUEPRINTS = (*pages.BLUEPRINTS, *api.BLUEPRINTS, *xnat.BLUEPRINTS)


def _status_of(error: ArchiveError) -> int:
    if isinstance(error, PacsError):
        return 502
    if isinstance(error, OrthancUnavailable | ServiceUnavailable):
        return 503
    if isinstance(error, NotFound):
        return 404
    if isinstance(error, Conflict):
        return 409
    if isinstance(error, Forbidden):
        return 403
    return 400


def _archive_error(error: ArchiveError) -> Any:
    status = _status_of(error)
    if auth.is_api():
        extra = {}
        if isinstance(error, FilterSyntaxError):
            extra = {"position": error.position, "reason": error.reason, "column": error.column}
        return auth.error_response(status, str(error), **extra)
    return render_template("error.html", status=status, message=str(error)), status


def _http_error(error: HTTPException) -> Any:
    if isinstance(error, auth.LoginRedirect):
        return error.get_response()
    message = error.description or error.name
    if isinstance(error, RequestEntityTooLarge):
        limit = request.max_content_length or 0
        message = f"the upload is larger than this site's limit of {limit / 1024**2:.0f} MiB"
    status = error.code or 500
    if auth.is_api():
        return auth.refusal(error, message)
    return render_template("error.html", status=status, message=message), status


def _unexpected_error(error: Exception) -> Any:
    # The details (a trace, server paths) go to the log, never to the caller.
    log.error("unexpected error on %s %s", request.method, request.path, exc_info=error)
    message = "the server failed on this request; the error was logged for the administrators"
    if auth.is_api():
        return auth.error_response(500, message)
    return render_template("error.html", status=500, message=message), 500


def create_app(settings: Settings | None = None, archive: Archive | None = None) -> Flask:
    settings = settings or load_settings()
    archive = archive or Archive(settings)
    archive.check_schema()
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=settings.read_secret("portal_secret"),
        SESSION_COOKIE_NAME="northanc_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.secure_cookies,
        PERMANENT_SESSION_LIFETIME=timedelta(hours=settings.session_hours),
        MAX_CONTENT_LENGTH=settings.upload_max_bytes,
        # Large uploads are spooled to disk by Werkzeug; forms are small.
        MAX_FORM_MEMORY_SIZE=1024 * 1024,
        JSON_SORT_KEYS=False,
    )
    app.extensions["northanc.archive"] = archive
    app.extensions["northanc.frontend"] = FRONTEND / "node_modules"
    app.teardown_appcontext(auth.close_db)
    app.register_error_handler(ArchiveError, _archive_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected_error)
    app.url_map.converters["int"] = ids.IdConverter
    app.json = ids.BoundedJSONProvider(app)
    app.jinja_env.globals.update(csrf_token=auth.csrf_token, current_user=auth.current_user)
    for blueprint in BLUEPRINTS:
        app.register_blueprint(blueprint)
    app.wsgi_app = xnat.archive_alias(app.wsgi_app)  # type: ignore[method-assign,assignment]  # WSGI middleware, as Flask documents
    if settings.proxy_hops:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.proxy_hops)  # type: ignore[method-assign]  # as Flask documents

    @app.after_request
    def _security_headers(response: Any) -> Any:
        for name, value in headers.PAGE_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    return app
