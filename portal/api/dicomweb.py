"""DICOMweb at ``/dicom-web/`` for OHIF and scripts: Orthanc's DICOMweb plugin behind the portal's
log-in and roles, with Orthanc's credentials added here.

Callers authenticate as for the API (session cookie, or ``Authorization: Bearer``); STOW from a
session needs the CSRF header. Whatever names a study needs a role on a project holding it, and
answers 404 for another project's study as for an unknown UID; searches over all studies find only
the caller's. Where the caller may not see identities, DICOM JSON and Part-10 objects are
pseudonymised on the way out. Errors answer JSON, as the API's do, never a page or a redirect.
The decisions are ``portal.dicomweb_access``'s and ``portal.dicomweb_identity``'s; this module
reads the rows they decide on and moves the bytes.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
from collections.abc import Collection, Iterator, Sequence
from typing import Any, cast
from urllib.parse import quote

import pydicom
from flask import Blueprint, Response, abort, current_app, g, request
from pydicom import Dataset
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.exceptions import HTTPException, NotAcceptable, RequestEntityTooLarge, UnsupportedMediaType

from nifti_archive.errors import ArchiveError, Conflict, Forbidden, InvalidValue, NotFound
from nifti_archive.ingest import series_projects
from nifti_archive.ingest.series_projects import Claim
from nifti_archive.models import File, Project, ProjectRole, Role, Study, Subject
from nifti_archive.orthanc_api import OrthancAnswer, OrthancRest, OrthancUnavailable, get_json, orthanc_for
from portal.access import Outcome
from portal.auth import Denied, LoginRedirect, archive, current_user, db, error_response, logged_in, project_role
from portal.dicomweb_access import (
    QidoPlan,
    QidoQuery,
    QueryError,
    StudyGrant,
    StudyView,
    parse_query,
    plan_search,
    results,
    show,
    stow_object,
    stow_refusal,
    strongest,
    study_views,
)
from portal.dicomweb_identity import bulk_path_allowed, pseudonymise_part10, restore_identity
from portal.multipart import MultipartError, Writer, boundary_of, split

log = logging.getLogger(__name__)
blueprint = Blueprint("dicomweb", __name__, url_prefix="/dicom-web")
ORTHANC_ROOT = "/dicom-web"
DICOM_JSON = "application/dicom+json"
PART10 = "application/dicom"
# Orthanc's headers a caller gets: the body's description and QIDO's warnings; never its
# authentication challenge (a browser would ask for Orthanc's password), cookies or banner.
PASSED_HEADERS = ("Content-Type", "Content-Length", "Warning")
# Series metadata is megabytes of repetitive JSON (3.8 MB for 150 instances, 63 KB gzipped).
GZIP_LEVEL = 6
GZIP_MIN_BYTES = 1024
# Orthanc 1.10 does not percent-decode query values (measured: ``%2A``, ``%5E``, ``%2E`` match
# nothing; ``%2C`` alone is read, as a list separator): match values go to it as they are,
# encoding only what would break the query string (``&``, ``=``, ``+``, ``#``, ``%``, spaces).
RAW_IN_QUERY = "*?,^-._~!$'();:@/\\"
ORTHANC_CLIENT = "northanc.dicomweb.orthanc"
STATUS_OF = ((NotFound, 404), (Forbidden, 403), (Conflict, 409), (OrthancUnavailable, 503))


def _grants(uids: Collection[str] | None) -> list[StudyGrant]:
    """The caller's live studies (of these UIDs), one row per project holding them, with the
    role ``accounts.role_on`` gives: every project's admin for site admins, none when disabled.
    Asked once per request and set of UIDs: the access check and the view both need them."""
    known: dict[frozenset[str] | None, list[StudyGrant]] = g.setdefault("study_grants", {})
    key = None if uids is None else frozenset(uids)
    if key not in known:
        known[key] = _load_grants(uids)
    return known[key]


def _load_grants(uids: Collection[str] | None) -> list[StudyGrant]:
    user = current_user()
    if user is None or user.disabled:
        return []
    query = (
        select(Study.study_instance_uid, Project, Subject.patient_id, Study.study_id)
        .join(Subject, Subject.id == Study.subject_id).join(Project, Project.id == Subject.project_id)
        .where(Study.trash_id.is_(None), Subject.trash_id.is_(None), Study.study_instance_uid != "")
    )
    if uids is not None:
        query = query.where(Study.study_instance_uid.in_(list(uids)))
    if user.is_site_admin:
        return [StudyGrant(uid, project, subject, study, Role.ADMIN) for uid, project, subject, study in db().execute(query)]
    held = query.add_columns(ProjectRole.role).join(
        ProjectRole, (ProjectRole.project_id == Project.id) & (ProjectRole.user_id == user.id)
    )
    return [StudyGrant(uid, project, subject, study, role) for uid, project, subject, study, role in db().execute(held)]


def study_project(_session: Session, kwargs: dict[str, Any]) -> Project | None:
    """The project a study's routes act in: of those holding it, the one the caller's role is highest on."""
    grant = strongest(_grants([kwargs["study"]]))
    return grant.project if grant else None


def _view(study: str) -> StudyView:
    return study_views(_grants([study]))[study]


def _orthanc() -> OrthancRest:
    # One client per worker: reading the credentials file on each of a series' hundreds of frame requests shows.
    extensions = current_app.extensions
    if ORTHANC_CLIENT not in extensions:
        extensions[ORTHANC_CLIENT] = orthanc_for(archive().settings)
    return cast(OrthancRest, extensions[ORTHANC_CLIENT])


def _uri(*segments: str | None, params: Sequence[tuple[str, str]] = ()) -> str:
    path = "/".join(quote(segment, safe="") for segment in segments if segment is not None)
    query = "&".join(f"{quote(name, safe='')}={quote(value, safe=RAW_IN_QUERY)}" for name, value in params)
    return f"{ORTHANC_ROOT}/{path}" + (f"?{query}" if query else "")


def _resource(study: str, series: str | None = None, instance: str | None = None) -> list[str | None]:
    return ["studies", study, *(["series", series] if series else []), *(["instances", instance] if instance else [])]


def _checked(answer: OrthancAnswer) -> OrthancAnswer:
    """The answer if Orthanc succeeded; else an error that names nothing the caller did not send
    (Orthanc's own 404 says in which study a series really is)."""
    if answer.status < 400:
        return answer
    detail = answer.read()[:2000]
    if answer.status == 404:
        raise NotFound(f"Orthanc holds nothing at {request.path}")
    if answer.status >= 500:
        log.error("Orthanc's DICOMweb answered %d to %s: %s", answer.status, request.path, detail.decode(errors="replace"))
        raise OrthancUnavailable(f"Orthanc's DICOMweb failed on {request.path} ({answer.status}); see Orthanc's log", answer.status)
    try:
        reason = str(json.loads(detail).get("Details", ""))
    except ValueError:
        reason = ""
    # Orthanc's own status (406 for an Accept it cannot serve, 400 for a bad query) with its reason.
    abort(answer.status, f"Orthanc's DICOMweb refused {request.path}: {reason or 'no reason given'}")


def _rebased(raw: bytes) -> bytes:
    """Orthanc's JSON with its own URLs (RetrieveURL, BulkDataURI) turned into the portal's."""
    return raw.replace(f"{_orthanc().url}{ORTHANC_ROOT}/".encode(), f"{request.root_url}dicom-web/".encode())


def _fetch_json(uri: str) -> bytes:
    return _rebased(_checked(_orthanc().stream("GET", uri, {"Accept": DICOM_JSON})).read())


def _json_response(body: bytes, status: int = 200) -> Response:
    response = Response(body, status=status, content_type=DICOM_JSON)
    response.vary.add("Accept-Encoding")
    if request.accept_encodings["gzip"] and len(body) >= GZIP_MIN_BYTES:
        response.set_data(gzip.compress(body, GZIP_LEVEL))
        response.headers["Content-Encoding"] = "gzip"
    return response


def _dumped(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _passed_on(answer: OrthancAnswer) -> Response:
    """Orthanc's answer streamed as it arrives (a study can be gigabytes)."""
    headers = {name: answer.headers[name] for name in PASSED_HEADERS if answer.headers[name]}
    response = Response(answer.chunks(), status=answer.status, headers=headers, direct_passthrough=True)
    response.call_on_close(answer.close)
    return response


def _search(resource: Sequence[str | None], plan: QidoPlan) -> Response:
    answers = []
    for search in plan.searches:
        raw = _fetch_json(_uri(*resource, params=search.params))
        answers.append(json.loads(raw) if raw.strip() else [])
    return _json_response(_dumped(results(plan, answers)))


def _query() -> QidoQuery:
    try:
        return parse_query(request.args.items(multi=True))
    except QueryError as exc:
        raise InvalidValue(str(exc)) from exc


@blueprint.route("/studies", defaults={"level": "studies"})
@blueprint.route("/series", defaults={"level": "series"})
@blueprint.route("/instances", defaults={"level": "instances"})
@logged_in
def search_all(level: str) -> Any:
    """QIDO-RS over every study the caller sees (filtered and paged as ``plan_search`` says)."""
    return _search([level], plan_search(_query(), study_views(_grants(None))))


@blueprint.route("/studies/<study>/series", defaults={"level": "series"})
@blueprint.route("/studies/<study>/instances", defaults={"level": "instances"})
@blueprint.route("/studies/<study>/series/<series>/instances", defaults={"level": "instances"})
@project_role(Role.VIEWER, via=study_project)
def search_study(study: str, level: str, series: str | None = None) -> Any:
    """QIDO-RS within one study."""
    view = _view(study)
    return _search([*_resource(study, series), level], plan_search(_query(), {study: view}, view))


@blueprint.route("/studies/<study>/metadata")
@blueprint.route("/studies/<study>/series/<series>/metadata")
@blueprint.route("/studies/<study>/series/<series>/instances/<instance>/metadata")
@project_role(Role.VIEWER, via=study_project)
def metadata(study: str, series: str | None = None, instance: str | None = None) -> Any:
    """WADO-RS metadata, as DICOM JSON (gzipped where the caller takes it)."""
    view = _view(study)
    raw = _fetch_json(_uri(*_resource(study, series, instance), "metadata"))
    if view.identity:
        return _json_response(raw)
    return _json_response(_dumped([show(dataset, view) for dataset in json.loads(raw)]))


@blueprint.route("/studies/<study>")
@blueprint.route("/studies/<study>/series/<series>")
@blueprint.route("/studies/<study>/series/<series>/instances/<instance>")
@project_role(Role.VIEWER, via=study_project)
def retrieve(study: str, series: str | None = None, instance: str | None = None) -> Any:
    """WADO-RS retrieve: Part-10 objects in multipart/related, streamed; rewritten one by one where
    the caller may not see identities."""
    view = _view(study)
    accept = request.headers.get("Accept", f'multipart/related; type="{PART10}"')
    answer = _checked(_orthanc().stream("GET", _uri(*_resource(study, series, instance)), {"Accept": accept}))
    if view.identity:
        return _passed_on(answer)
    try:
        _media, part_type, boundary = boundary_of(answer.headers.get("Content-Type", ""))
    except MultipartError:
        part_type, boundary = "", b""
    if part_type != PART10:
        answer.close()
        raise NotAcceptable(f'identities are hidden in this study: ask for multipart/related; type="{PART10}", whose objects are rewritten')
    writer = Writer(PART10)

    def rewritten() -> Iterator[bytes]:
        for part in split(answer.chunks(), boundary):
            yield writer.part(pseudonymise_part10(part.body, view.pseudonym))
        yield writer.end()

    response = Response(rewritten(), content_type=writer.content_type, direct_passthrough=True)
    response.call_on_close(answer.close)
    return response


@blueprint.route("/studies/<study>/rendered")
@blueprint.route("/studies/<study>/series/<series>/rendered")
@blueprint.route("/studies/<study>/series/<series>/instances/<instance>/rendered")
@blueprint.route("/studies/<study>/series/<series>/instances/<instance>/frames/<frames>/rendered")
@project_role(Role.VIEWER, via=study_project)
def rendered(study: str, series: str | None = None, instance: str | None = None, frames: str | None = None) -> Any:
    """WADO-RS rendered images (pixels only; ``viewport``, ``quality``, ``window`` passed on)."""
    uri = _uri(*_resource(study, series, instance), *(["frames", frames] if frames else []), "rendered",
               params=list(request.args.items(multi=True)))
    return _passed_on(_checked(_orthanc().stream("GET", uri, {"Accept": request.headers.get("Accept", "image/jpeg")})))


@blueprint.route("/studies/<study>/series/<series>/instances/<instance>/frames/<frames>")
@project_role(Role.VIEWER, via=study_project)
def frame_pixels(study: str, series: str, instance: str, frames: str) -> Any:
    """WADO-RS frames: pixel data, streamed."""
    accept = request.headers.get("Accept", 'multipart/related; type="application/octet-stream"')
    return _passed_on(_checked(_orthanc().stream("GET", _uri(*_resource(study, series, instance), "frames", frames), {"Accept": accept})))


@blueprint.route("/studies/<study>/series/<series>/instances/<instance>/bulk/<path:bulk>")
@project_role(Role.VIEWER, via=study_project)
def bulk_data(study: str, series: str, instance: str, bulk: str) -> Any:
    """The BulkDataURIs of metadata answers; where identities are hidden, binary values only
    (Orthanc would answer any attribute here, the patient's name too)."""
    if not _view(study).identity and not bulk_path_allowed(bulk):
        raise Forbidden("identities are hidden in this study: bulk data is served for binary values (pixels, overlays) only")
    uri = _uri(*_resource(study, series, instance), "bulk") + "/" + "/".join(quote(part, safe="") for part in bulk.split("/"))
    return _passed_on(_checked(_orthanc().stream("GET", uri, {"Accept": request.headers.get("Accept", "*/*")})))


@blueprint.route("/studies", methods=["POST"])
@logged_in
def store() -> Any:
    """STOW-RS of DICOM SEG and SR objects into the studies they name."""
    return _stow(None)


@blueprint.route("/studies/<study>", methods=["POST"])
@project_role(Role.EDITOR, via=study_project)
def store_into(study: str) -> Any:
    """STOW-RS into the study the URL names."""
    return _stow(study)


def _stow_body() -> list[Dataset]:
    """The request's Part-10 objects, parsed; 413, 415 or 400 (naming the part) when they are not."""
    limit = archive().settings.stow_max_bytes
    too_large = f"the STOW-RS request is larger than this site's limit of {limit / 1024**2:.0f} MiB (stow_max_bytes)"
    if request.content_length is not None and request.content_length > limit:
        raise RequestEntityTooLarge(too_large)
    if request.mimetype != "multipart/related":
        raise UnsupportedMediaType(f'STOW-RS takes multipart/related; type="{PART10}", not {request.mimetype or "an untyped body"}')
    try:
        _media, part_type, boundary = boundary_of(request.content_type or "")
        if part_type not in ("", PART10):
            raise UnsupportedMediaType(f'STOW-RS here takes Part-10 objects (type="{PART10}"), not {part_type}')
        body = request.stream.read(limit + 1)
        if len(body) > limit:
            raise RequestEntityTooLarge(too_large)
        parts = list(split([body], boundary))
    except MultipartError as exc:
        raise InvalidValue(f"the STOW-RS body is not valid multipart/related: {exc}") from exc
    if not parts:
        raise InvalidValue("the STOW-RS body holds no DICOM object")
    objects: list[Dataset] = []
    for number, part in enumerate(parts, 1):
        if part.content_type and part.content_type.split(";")[0].strip().lower() != PART10:
            raise InvalidValue(f"part {number} is {part.content_type}, not {PART10}")
        try:
            objects.append(pydicom.dcmread(io.BytesIO(part.body)))
        except (pydicom.errors.InvalidDicomError, EOFError, ValueError, OSError) as exc:
            raise InvalidValue(f"part {number} is not a DICOM Part-10 object: {exc}") from exc
    return objects


def _project_series(uids: Collection[str]) -> set[tuple[int, str]]:
    """(project id, series UID) of these source series where the archive holds their conversions."""
    rows = db().execute(
        select(Subject.project_id, File.source_series_uid)
        .join(Study, Study.subject_id == Subject.id).join(File, File.study_id == Study.id)
        .where(File.source_series_uid.in_(list(uids)), File.trash_id.is_(None), Study.trash_id.is_(None), Subject.trash_id.is_(None))
    )
    return {(project_id, str(uid)) for project_id, uid in rows}


def _study_identity(rest: OrthancRest, study_uid: str) -> dict[str, str]:
    """The patient and study identifiers Orthanc holds for a study (by keyword)."""
    found = [item for item in rest.post("/tools/lookup", study_uid.encode(), "text/plain") if item.get("Type") == "Study"]
    if not found:
        raise Conflict(f"study {study_uid} is in the archive but not in Orthanc: nothing can be stored into it")
    study = get_json(rest, f"/studies/{found[0]['ID']}")
    return {**study.get("PatientMainDicomTags", {}), **study.get("MainDicomTags", {})}


def _stow(url_study: str | None) -> Any:
    objects = _stow_body()
    stowed = [stow_object(dataset) for dataset in objects]
    grants = _grants({item.study_uid for item in stowed})
    series = _project_series({uid for item in stowed for uid in item.source_series})
    refused, homes = [], []
    for item in stowed:
        grant = strongest(grant for grant in grants if grant.study_uid == item.study_uid)
        if grant is None:
            raise NotFound(f"no study {item.study_uid}, or you have no role on a project that holds it")
        if not grant.role.allows(Role.EDITOR):
            raise Forbidden(f"storing into study {item.study_uid} needs editor on its project")
        reason = stow_refusal(item, url_study, {uid for project_id, uid in series if project_id == grant.project.id})
        if reason:
            refused.append({"sop_instance_uid": item.sop_instance, "reason": reason})
        homes.append((item.series_uid, grant))
    if refused:
        return error_response(409, f"nothing was stored: {refused[0]['reason']}", refused=refused)
    _claim(homes)
    rest = _orthanc()
    identities = {uid: _study_identity(rest, uid) for uid in {item.study_uid for item in stowed}}
    writer = Writer(PART10)
    body = writer.body(_with_identity(dataset, identities[item.study_uid]) for dataset, item in zip(objects, stowed, strict=True))
    answer = rest.stream("POST", _uri("studies", url_study), {"Accept": DICOM_JSON, "Content-Type": writer.content_type}, body)
    if answer.status >= 500:
        _checked(answer)  # raises: a failure of Orthanc's, not a STOW-RS answer to pass on
    user = current_user()
    log.info("STOW-RS by %s: %d object(s) into %s: Orthanc answered %d", user.username if user else "?", len(stowed),
             ", ".join(sorted(identities)), answer.status)
    return _json_response(_rebased(answer.read()), answer.status)


def _claim(homes: list[tuple[str, StudyGrant]]) -> None:
    """Each stored series goes into the subject and study folders of the study it joins: routing
    (no called AET over HTTP) would file an SR under a new subject of the inbox, which would then
    show the whole study to the inbox's members. Refused where the series lives in another project."""
    with archive().unit_of_work() as (session, _journal):
        for series_uid, grant in homes:
            series_projects.claim(session, grant.project, {series_uid: Claim(grant.subject, grant.study)})


def _with_identity(dataset: Dataset, identity: dict[str, str]) -> bytes:
    restore_identity(dataset, identity)
    written = io.BytesIO()
    dataset.save_as(written, enforce_file_format=True)
    return written.getvalue()


@blueprint.errorhandler(HTTPException)
def _http_error(error: HTTPException) -> Any:
    """JSON for DICOMweb clients: a log-in page or redirect means nothing to a viewer's requests."""
    if isinstance(error, LoginRedirect):
        if current_user() is None:
            return error_response(401, "log in, or send an API token (Authorization: Bearer ...)")
        return error_response(403, "set a new password first (your password is a one-time one)")
    if isinstance(error, Denied) and error.outcome is Outcome.HIDDEN:
        return error_response(404, "no such study, or you have no role on a project that holds it")
    return error_response(error.code or 500, error.description or error.name)


@blueprint.errorhandler(ArchiveError)
def _archive_error(error: ArchiveError) -> Any:
    status = next((code for kind, code in STATUS_OF if isinstance(error, kind)), 400)
    return error_response(status, str(error))


@blueprint.errorhandler(Exception)
def _unexpected_error(error: Exception) -> Any:
    # The details (a trace, server paths) go to the log, never to the caller.
    log.error("unexpected error on %s %s", request.method, request.path, exc_info=error)
    return error_response(500, "the server failed on this request; the error was logged for the administrators")
