"""An XNAT-compatible REST surface (``/data``, ``/xapi``) over the archive, for XNAT's clients
(xnatpy, XNAT scripts): the same roles, pseudonyms and files as ``/api/v1``, in XNAT's shapes."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from portal.xnat import archive_routes, schemas, session_routes

BLUEPRINTS = (session_routes.blueprint, archive_routes.blueprint, schemas.blueprint)
# XNAT serves its archive under /data and /data/archive alike.
ALIAS_PREFIX = "/data/archive/"
CANONICAL_PREFIX = "/data/"

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def canonical_path(path: str) -> str:
    return CANONICAL_PREFIX + path[len(ALIAS_PREFIX):] if path.startswith(ALIAS_PREFIX) else path


def archive_alias(app: WsgiApp) -> WsgiApp:
    """WSGI middleware answering ``/data/archive/...`` as ``/data/...``, before routing."""

    def wrapped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        environ["PATH_INFO"] = canonical_path(environ.get("PATH_INFO", ""))
        return app(environ, start_response)

    return wrapped
