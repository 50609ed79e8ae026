"""OHIF Viewer under ``/ohif/``: npm ``@ohif/app``'s prebuilt ``dist/`` on the portal's DICOMweb.

OHIF reaches DICOM only through the portal's ``/dicom-web`` on this origin, which applies the
caller's roles and pseudonymisation; so OHIF's pages need a logged-in user, and what they show
is what the DICOMweb answers let through. The dist is built for the site root: its index page,
manifest, style sheets and the bundles that set webpack's public path name absolute ``/``
paths. Those files are rewritten for ``/ohif/`` once per installed dist, into
``var/ohif/<version>-<digest>/``; every other file is sent from ``node_modules`` as it is. The
index page's two inline scripts become files there too, so OHIF's pages run no inline script
either, and the page carries the session's CSRF token in a meta tag, as the portal's pages do.
``app-config.js`` is the portal's own (``config_script``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlencode

from flask import Blueprint, Flask, current_app, redirect, request, send_from_directory
from markupsafe import escape
from werkzeug.exceptions import NotFound as HTTPNotFound
from werkzeug.exceptions import ServiceUnavailable

from nifti_archive.errors import Conflict, InvalidValue
from nifti_archive.models import Role
from portal import headers
from portal.api.archive import project_study
from portal.auth import csrf_token, logged_in, project_role

blueprint = Blueprint("ohif", __name__)
PREFIX = "/ohif/"
DIST = "@ohif/app/dist"
# The portal's DICOMweb endpoint, on this origin; OHIF's QIDO, WADO and STOW roots.
DICOMWEB_ROOT = "/dicom-web"
# webpack's public path, as the dist's bundles that load further chunks, workers or wasm set it.
PUBLIC_PATH = '__webpack_require__.p = "/";'
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)
ROOT_ATTRIBUTE = re.compile(r'(\s(?:href|src|content)=")/(?!/)')
CSS_ROOT_URL = re.compile(r"url\(/(?!/)")
CSRF_META = '<meta name="csrf-token" content="{token}">'
# Names without a file fall back to the index page (OHIF's own routes: /viewer, /segmentation,
# ...), except asset-like names: a missing bundle answered with HTML would fail far from its cause.
ASSET_SUFFIXES = {".js", ".mjs", ".css", ".map", ".wasm", ".json", ".png", ".svg", ".ico", ".woff", ".woff2", ".xml", ".html"}


@dataclass(frozen=True)
class RewrittenDist:
    """The installed dist and the folder of its files rewritten for ``/ohif/``."""

    dist: Path
    folder: Path
    # The rewritten files by name (relative to the dist), and the index page with a ``{token}`` slot.
    names: frozenset[str]
    index: str


_LOCK = threading.Lock()


def _version(dist: Path) -> str:
    return str(json.loads((dist.parent / "package.json").read_text())["version"])


def _rewrite_index(text: str) -> tuple[str, dict[str, str]]:
    """The index page for ``/ohif/`` with a CSRF slot, and its inline scripts as files."""
    scripts: dict[str, str] = {}

    def external(match: re.Match[str]) -> str:
        name = f"northanc-inline-{len(scripts)}.js"
        scripts[name] = match.group(1).replace('window.PUBLIC_URL="/"', f'window.PUBLIC_URL="{PREFIX}"')
        return f'<script src="{PREFIX}{name}"></script>'

    text = ROOT_ATTRIBUTE.sub(lambda m: m.group(1) + PREFIX, text)
    text = INLINE_SCRIPT.sub(external, text)
    # Braces of the page itself must survive str.format; the token's slot is the only field.
    text = text.replace("{", "{{").replace("}", "}}")
    text = text.replace("<head>", "<head>" + CSRF_META, 1)
    return text, scripts


def _rewrite_manifest(value: Any) -> Any:
    if isinstance(value, str) and value.startswith("/") and not value.startswith("//"):
        return PREFIX + value[1:]
    if isinstance(value, list):
        return [_rewrite_manifest(v) for v in value]
    if isinstance(value, dict):
        return {k: _rewrite_manifest(v) for k, v in value.items()}
    return value


def _rewritten_files(dist: Path) -> dict[str, str]:
    """Every top-level file of the dist that names ``/`` paths, rewritten (the index page aside)."""
    files: dict[str, str] = {}
    manifest = dist / "manifest.json"
    if manifest.is_file():
        files["manifest.json"] = json.dumps(_rewrite_manifest(json.loads(manifest.read_text())), indent=2)
    for path in sorted(dist.iterdir()):
        if path.suffix == ".css":
            text = path.read_text()
            if CSS_ROOT_URL.search(text):
                files[path.name] = CSS_ROOT_URL.sub(f"url({PREFIX}", text)
        elif path.suffix == ".js":
            text = path.read_text()
            if PUBLIC_PATH in text:
                files[path.name] = text.replace(PUBLIC_PATH, f'__webpack_require__.p = "{PREFIX}";')
    return files


def _build(dist: Path, var: Path) -> RewrittenDist:
    index_source = (dist / "index.html").read_text()
    key = f"{_version(dist)}-{hashlib.sha256(index_source.encode()).hexdigest()[:12]}"
    folder = var / "ohif" / key
    marker = folder / "rewritten.json"
    if marker.is_file():
        names = json.loads(marker.read_text())
        return RewrittenDist(dist, folder, frozenset(names), (folder / "index.template").read_text())
    index, scripts = _rewrite_index(index_source)
    files = {**_rewritten_files(dist), **scripts, "index.template": index}
    folder.mkdir(parents=True, exist_ok=True)
    # Each file whole or not at all: another worker may be writing the same files now, or
    # serving them; the marker comes last, so a folder without it is rewritten again.
    for name, text in files.items():
        partial = folder / f".{name}.{os.getpid()}"
        partial.write_text(text)
        partial.replace(folder / name)
    names = sorted(set(files) - {"index.template"})
    partial_marker = folder / f".rewritten.json.{os.getpid()}"
    partial_marker.write_text(json.dumps(names))
    partial_marker.replace(marker)
    # A rewritten copy of another installed dist is tens of megabytes no worker serves any more.
    for other in folder.parent.iterdir():
        if other != folder:
            shutil.rmtree(other, ignore_errors=True)
    return RewrittenDist(dist, folder, frozenset(names), index)


def rewritten(app: Flask) -> RewrittenDist:
    """The dist rewritten for ``/ohif/`` (once per process, the files once per installed dist)."""
    with _LOCK:
        found = app.extensions.get("northanc.ohif")
        if found is None:
            dist = app.extensions["northanc.frontend"] / DIST
            if not (dist / "index.html").is_file():
                raise ServiceUnavailable("OHIF is not installed on this server (setup.sh installs it with npm ci)")
            found = _build(dist, app.extensions["northanc.archive"].settings.var_dir)
            app.extensions["northanc.ohif"] = found
        return cast(RewrittenDist, found)


def app_config() -> dict[str, Any]:
    """OHIF's configuration, less the DICOMweb roots (absolute URLs, made in the browser)."""
    return {
        "routerBasename": PREFIX.rstrip("/"),
        # The dist registers its own extensions and modes; listing them again breaks its start.
        "extensions": [],
        "modes": [],
        "customizationService": {},
        # The study list asks QIDO, which answers only the studies the user may see.
        "showStudyList": True,
        "investigationalUseDialog": {"option": "never"},
        "maxNumberOfWebWorkers": 3,
        "showCPUFallbackMessage": True,
        "showLoadingIndicator": True,
        "strictZSpacingForVolumeViewport": True,
        "groupEnabledModesFirst": True,
        "maxNumRequests": {"interaction": 100, "thumbnail": 5, "prefetch": 25},
        "showErrorDetails": "dev",
        "defaultDataSourceName": "northanc",
        "dataSources": [{
            "namespace": "@ohif/extension-default.dataSourcesModule.dicomweb",
            "sourceName": "northanc",
            "configuration": {
                "friendlyName": "Northanc",
                "name": "northanc",
                "qidoSupportsIncludeField": True,
                # Orthanc's DICOMweb 1.7 has no /thumbnail; /rendered is there.
                "imageRendering": "wadors",
                "thumbnailRendering": "wadors",
                "enableStudyLazyLoad": True,
                "supportsFuzzyMatching": False,
                "supportsWildcard": True,
                "staticWado": False,
                "singlepart": "bulkdata,video",
                "bulkDataURI": {"enabled": True, "relativeResolution": "studies"},
                "omitQuotationForMultipartRequest": True,
                # OHIF 3.13 stores a Label Map SEG (a newer SOP class) in RLE by default; the
                # portal's STOW takes the binary SEG that the archive reads into ROIs.
                "segmentation": {"store": {"defaultMode": "bitmap", "transferSyntaxUID": EXPLICIT_VR_LITTLE_ENDIAN}},
            },
        }],
    }


# Runs before OHIF's bundles. OHIF's DICOMweb data source sends no header of ours: it copies only
# ``Authorization`` from its user authentication service into its requests. The portal's
# DICOMweb takes the session cookie, and an unsafe request (STOW) on it must carry the page's
# CSRF token as every portal page's calls do; so the token from the index page's meta tag is
# added to XMLHttpRequest and fetch calls that write to this origin's DICOMweb.
CONFIG_SCRIPT = """// Generated by the portal (portal/pages/ohif.py).
(() => {
  const csrf = document.querySelector('meta[name="csrf-token"]')?.content ?? "";
  const root = `${location.origin}%(root)s`;
  const safe = new Set(["GET", "HEAD", "OPTIONS"]);
  const writesDicomweb = (method, url) => {
    if (safe.has(String(method || "GET").toUpperCase())) return false;
    const target = new URL(String(url), location.href);
    return target.origin === location.origin && target.pathname.startsWith("%(root)s/");
  };
  const open = XMLHttpRequest.prototype.open;
  XMLHttpRequest.prototype.open = function (method, url, ...rest) {
    open.call(this, method, url, ...rest);
    if (writesDicomweb(method, url)) this.setRequestHeader("X-CSRF-Token", csrf);
  };
  const originalFetch = window.fetch;
  window.fetch = (input, init = {}) => {
    const method = init.method ?? (input instanceof Request ? input.method : "GET");
    const url = input instanceof Request ? input.url : input;
    if (!writesDicomweb(method, url)) return originalFetch(input, init);
    const sent = new Headers(init.headers ?? (input instanceof Request ? input.headers : undefined));
    sent.set("X-CSRF-Token", csrf);
    return originalFetch(input, { ...init, headers: sent });
  };
  const config = %(config)s;
  for (const source of config.dataSources) {
    Object.assign(source.configuration, { qidoRoot: root, wadoRoot: root, wadoUriRoot: root });
  }
  window.config = config;
})();
"""


def config_script() -> str:
    return CONFIG_SCRIPT % {"root": DICOMWEB_ROOT, "config": json.dumps(app_config(), indent=2)}


@blueprint.after_request
def _ohif_policy(response: Any) -> Any:
    # OHIF's own pages get OHIF's policy; the study-opening redirect keeps the portal's.
    if request.path.startswith(PREFIX) or request.path == PREFIX.rstrip("/"):
        for name, value in headers.OHIF_HEADERS.items():
            response.headers[name] = value
    return response


def _index() -> Any:
    page = rewritten(current_app).index.format(token=escape(csrf_token()))
    response = current_app.response_class(page, mimetype="text/html")
    # The page carries the session's CSRF token: never from a cache.
    response.headers["Cache-Control"] = "no-store"
    return response


@blueprint.route("/ohif/")
@logged_in
def index() -> Any:
    return _index()


@blueprint.route("/ohif/app-config.js")
@logged_in
def app_config_js() -> Any:
    response = current_app.response_class(config_script(), mimetype="text/javascript")
    response.headers["Cache-Control"] = "no-cache"
    return response


@blueprint.route("/ohif/<path:name>")
@logged_in
def asset(name: str) -> Any:
    """A file of the dist (rewritten where it names ``/`` paths), else OHIF's index page for its routes."""
    dist = rewritten(current_app)
    if name in dist.names:
        return send_from_directory(dist.folder, name, max_age=3600)
    if name != "index.html":
        try:
            return send_from_directory(dist.dist, name, max_age=3600)
        except HTTPNotFound:
            if Path(name).suffix.lower() in ASSET_SUFFIXES:
                raise
    return _index()


@blueprint.route("/p/<project>/ohif")
@project_role(Role.VIEWER)
def open_study(project: str) -> Any:
    """``?study=<id>``: the study in OHIF, by its StudyInstanceUID (XNAT's ``/ohif/viewer`` URL)."""
    study_pk = request.args.get("study", type=int)
    if study_pk is None:
        raise InvalidValue("name the study to open: ?study=<id>")
    _subject, study = project_study(study_pk)
    if not study.study_instance_uid:
        raise Conflict(f"study {study.study_id} did not come from DICOM: OHIF has nothing to show")
    return redirect(f"{PREFIX}viewer?{urlencode({'StudyInstanceUIDs': study.study_instance_uid})}")
