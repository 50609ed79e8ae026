"""An XNAT-compatible REST surface (``/data``, ``/xapi``) over the archive, for XNAT's clients
(xnatpy, XNAT scripts): the same roles, pseudonyms and files as ``/api/v1``, in XNAT's shapes."""

from __future__ import annotations

from collections.abc import Iterable
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from portal.xnat import archive_routes, schemas, session_routes

BLUEPRINTS = (session_routes.blueprint, archive_routes.blueprint, schemas.blueprint)
# XNAT serves its archive under /data and /data/archive alike.
ALIAS_PREFIX = "/data/archive/"
CANONICAL_PREFIX = "/data/"

def canonical_path(path: str) -> str:
    return CANONICAL_PREFIX + path[len(ALIAS_PREFIX):] if path.startswith(ALIAS_PREFIX) else path


def archive_alias(app: WSGIApplication) -> WSGIApplication:
    """WSGI middleware answering ``/data/archive/...`` as ``/data/...``, before routing."""

    def wrapped(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        environ["PATH_INFO"] = canonical_path(environ.get("PATH_INFO", ""))
        return app(environ, start_response)

    return wrapped
