"""REST API v1 on the archive: projects, subjects, studies (the table), files, tags, selection, import."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from flask import Blueprint, g, jsonify, request, send_file
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from werkzeug.datastructures import FileStorage

from nifti_archive import accounts
from nifti_archive.catalog.registration import check_unregistered, register_file
from nifti_archive.catalog.tags import TagLevel, add_tags, check_owners, remove_tags
from nifti_archive.errors import Conflict, InvalidValue, NotFound
from nifti_archive.ingest.importer import Importer, ImportOptions, check_archive
from nifti_archive.layout import check_relative_path
from nifti_archive.models import File, Project, Role, Study, Subject
from nifti_archive.orthanc_api import orthanc_for
from nifti_archive.query.selection import select_files
from nifti_archive.query.study_table import parse_table_query, study_page
from portal import headers
from portal.access import Outcome, may_see_identity
from portal.auth import Denied, archive, db, logged_in, project_role, projects_with_roles
from portal.ids import is_id

blueprint = Blueprint("api_archive", __name__, url_prefix="/api/v1")
UPLOAD_FIELD = "thefile"
DEFAULT_UPLOAD_FOLDER = "uploads"


def file_project(session: Session, kwargs: dict[str, Any]) -> Project | None:
    return session.scalar(
        select(Project)
        .join(Subject, Subject.project_id == Project.id)
        .join(Study, Study.subject_id == Subject.id)
        .join(File, File.study_id == Study.id)
        .where(File.id == kwargs["file_id"], File.trash_id.is_(None))
    )


def project_study(study_id: int) -> tuple[Subject, Study]:
    row = db().execute(
        select(Subject, Study)
        .join(Study, Study.subject_id == Subject.id)
        .where(Study.id == study_id, Subject.project_id == g.project.id, Study.trash_id.is_(None))
    ).first()
    if row is None:
        raise NotFound(f"no study {study_id} in project {g.project.name!r}")
    return row[0], row[1]


def file_json(record: File, identity: bool) -> dict[str, Any]:
    """A file's record; its source SeriesInstanceUID only for callers who may see identities (a UID
    links a pseudonymised subject back to the hospital's PACS)."""
    return {
        "id": record.id, "study_id": record.study_id, "path": record.path, "kind": record.kind.value, "size": record.size,
        "sha256": record.sha256, "tags": sorted(t.tag for t in record.tags),
        "source_series_uid": record.source_series_uid if identity else None, "converter": record.converter,
        "converter_version": record.converter_version, "created_at": record.created_at.isoformat(),
    }


@blueprint.route("/projects")
@logged_in
def projects() -> Any:
    """The projects the caller has a role on, with that role."""
    return jsonify({"projects": [
        {"name": project.name, "description": project.description, "role": role.value} for project, role in projects_with_roles()
    ]})


@blueprint.route("/projects/<project>")
@project_role(Role.VIEWER)
def project(project: str) -> Any:
    """One project: its settings and the caller's role."""
    record: Project = g.project
    studies = db().scalar(
        select(func.count()).select_from(Study).join(Subject, Subject.id == Study.subject_id)
        .where(Subject.project_id == record.id, Study.trash_id.is_(None))
    )
    return jsonify({
        "name": record.name, "description": record.description, "pseudonymise": record.pseudonymise,
        "role": g.role.value, "studies": studies, "identity_visible": may_see_identity(record, g.role),
    })


@blueprint.route("/projects/<project>/subjects")
@project_role(Role.VIEWER)
def subjects(project: str) -> Any:
    """The project's live subjects with their study counts."""
    rows = db().execute(
        select(Subject.id, Subject.patient_id, func.count(Study.id))
        .outerjoin(Study, (Study.subject_id == Subject.id) & Study.trash_id.is_(None))
        .where(Subject.project_id == g.project.id, Subject.trash_id.is_(None))
        .group_by(Subject.id, Subject.patient_id).order_by(Subject.patient_id)
    )
    return jsonify({"subjects": [{"id": i, "subject": p, "studies": n} for i, p, n in rows]})


@blueprint.route("/projects/<project>/studies")
@project_role(Role.VIEWER)
def studies(project: str) -> Any:
    """The subject/study table: filter bars ``f_<column>``, ``sort``, ``offset`` or ``after`` (the
    previous page's ``next``), ``limit``."""
    query = parse_table_query(request.args, may_see_identity(g.project, g.role))
    page = study_page(db(), g.project, query)
    return jsonify({
        "total": page.total, "offset": page.offset, "limit": query.limit, "next": page.next,
        "rows": [r.as_json() for r in page.rows],
    })


@blueprint.route("/projects/<project>/studies/<int:study_id>")
@project_role(Role.VIEWER)
def study(project: str, study_id: int) -> Any:
    """One study and its live files."""
    subject, record = project_study(study_id)
    files = db().scalars(select(File).where(File.study_id == record.id, File.trash_id.is_(None)).order_by(File.path))
    return jsonify({
        "id": record.id, "subject": subject.patient_id, "subject_id": subject.id, "study": record.study_id,
        "study_date": record.study_date.isoformat() if record.study_date else None, "description": record.description,
        "tags": sorted(t.tag for t in record.tags), "files": [file_json(f, may_see_identity(g.project, g.role)) for f in files],
    })


@blueprint.route("/projects/<project>/select")
@project_role(Role.VIEWER)
def select_by_pattern(project: str) -> Any:
    """Files matching a file-search expression (``pattern``), as ``nora -s`` selects them."""
    expression = request.args.get("pattern", "")
    if not expression.strip():
        raise InvalidValue("give a file pattern, e.g. pattern=t1*/s*.nii.gz")
    selected = select_files(db(), g.project, expression)
    return jsonify({"files": [
        {"id": f.file_id, "study_id": f.study_pk, "subject": f.subject, "study": f.study, "path": f.path} for f in selected
    ]})


@blueprint.route("/projects/<project>/tags", methods=["POST"])
@project_role(Role.EDITOR)
def tags(project: str) -> Any:
    """Add and remove tags: ``{"level": "study", "ids": [...], "add": [...], "remove": [...]}``."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise InvalidValue('send JSON: {"level": "study", "ids": [1, 2], "add": ["t1"], "remove": []}')
    try:
        level = TagLevel(body.get("level"))
    except ValueError:
        raise InvalidValue("level must be subject, study or file") from None
    ids, adding, removing = body.get("ids"), body.get("add", []), body.get("remove", [])
    if not isinstance(ids, list) or not all(is_id(i) for i in ids):
        raise InvalidValue("ids must be a list of ids")
    if not isinstance(adding, list) or not isinstance(removing, list) or not (adding or removing):
        raise InvalidValue("add and remove are lists of tags, and one of them must name a tag")
    with archive().unit_of_work() as (work, _journal):
        owners = check_owners(work, level, g.project.id, ids)
        added = add_tags(work, level, owners, adding) if adding else 0
        removed = remove_tags(work, level, owners, removing) if removing else 0
    return jsonify({"added": added, "removed": removed})


@blueprint.route("/files/<int:file_id>")
@project_role(Role.VIEWER, via=file_project)
def file_info(file_id: int) -> Any:
    """A file's record: path, size, checksum, tags and provenance."""
    record = db().get_one(File, file_id)
    subject, study_record = project_study(record.study_id)
    return jsonify({
        **file_json(record, may_see_identity(g.project, g.role)),
        "project": g.project.name, "subject": subject.patient_id, "study": study_record.study_id,
    })


@blueprint.route("/files/<int:file_id>/content")
@project_role(Role.VIEWER, via=file_project)
def file_content(file_id: int) -> Any:
    """The file's bytes; honours HTTP Range for partial reads."""
    record = db().get_one(File, file_id)
    subject, study_record = project_study(record.study_id)
    return send_study_file(archive().layout.study_dir(g.project.name, subject.patient_id, study_record.study_id), record.path)


def send_study_file(study_dir: Path, relative: str, download_name: str | None = None, blinded: bool = False) -> Any:
    """A file of a study as the API sends users' files (``headers.delivery``), with HTTP Range;
    ``download_name`` replaces the file's own name where that name must not be told. A ``blinded``
    answer has no validators: Werkzeug's ETag hashes the file's path (subject and study) and its
    Last-Modified is the conversion's date."""
    path = study_dir / relative
    if not path.is_file():
        raise NotFound(f"{relative} is indexed but missing on disk; tell an administrator")
    how = headers.delivery(relative)
    # Nor does it answer conditional requests: If-Modified-Since would find the date by bisection.
    response = send_file(path, mimetype=how.mimetype, as_attachment=how.as_attachment, conditional=not blinded,
                         download_name=download_name or PurePosixPath(relative).name, max_age=0,
                         etag=not blinded)
    if blinded:
        response.headers.pop("Last-Modified", None)
    response.headers["Content-Security-Policy"] = headers.FILE_POLICY
    return response


def uploaded_archive() -> FileStorage:
    upload = request.files.get(UPLOAD_FIELD)
    if upload is None or not upload.filename:
        raise InvalidValue(f"send the archive as multipart field {UPLOAD_FIELD!r}")
    return upload


def run_import(project_name: str, upload: FileStorage) -> dict[str, Any]:
    """A zip or tar of DICOM through ``nora --import``'s path: Orthanc stores, ingestion converts."""
    settings = archive().settings
    spool = settings.var_dir / "uploads"
    spool.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=spool) as scratch:
        source = Path(scratch) / "upload"
        upload.save(source)
        shown = repr(upload.filename)
        check_archive(source, shown)
        report = Importer(archive(), orthanc_for(settings), ImportOptions(project=project_name)).run(source, display=shown)
    if not (report.stored or report.already_stored):
        raise InvalidValue(f"nothing imported from {upload.filename!r}: no DICOM in it")
    return {
        "stored": report.stored, "already_stored": report.already_stored, "series": sorted(report.series),
        "skipped": [{"name": name, "reason": reason} for name, reason in report.skipped],
    }


@blueprint.route("/projects/<project>/import", methods=["POST"])
@project_role(Role.EDITOR)
def import_dicom(project: str) -> Any:
    """Import a zip or tar of DICOM (multipart field ``thefile``); conversion follows in the background."""
    return jsonify(run_import(g.project.name, uploaded_archive())), 202


@blueprint.route("/projects/<project>/studies/<int:study_id>/files", methods=["POST"])
@project_role(Role.EDITOR)
def upload_files(project: str, study_id: int) -> Any:
    """Put NIfTI or other files (multipart ``files``) into a study folder (``folder``, default uploads)."""
    subject, record = project_study(study_id)
    folder = check_relative_path(request.form.get("folder", DEFAULT_UPLOAD_FOLDER).strip("/") or DEFAULT_UPLOAD_FOLDER)
    uploads = request.files.getlist("files")
    if not uploads:
        raise InvalidValue("send one or more files as multipart field 'files'")
    names = [check_relative_path(f"{folder}/{PurePosixPath(u.filename or '').name}") for u in uploads]
    if len(set(names)) != len(names):
        raise Conflict("two uploads have the same name")
    return jsonify({"files": place_files(subject, record, [(u.save, name) for u, name in zip(uploads, names, strict=True)])}), 201


# Writes an upload's bytes to the path it is given (a staging file).
Saver = Callable[[Path], object]


def place_files(subject: Subject, study: Study, uploads: Sequence[tuple[Saver, str]]) -> list[dict[str, Any]]:
    """Stage each upload, then move it to its checked path below the study and index it, all or
    nothing: a path already taken refuses the lot (409) before any file lands."""
    study_dir = archive().layout.study_dir(g.project.name, subject.patient_id, study.study_id)
    spool = archive().settings.var_dir / "uploads"
    spool.mkdir(parents=True, exist_ok=True)
    added = []
    with tempfile.TemporaryDirectory(dir=spool) as scratch, archive().unit_of_work() as (work, journal):
        for index, (save, relative) in enumerate(uploads):
            staged = Path(scratch) / str(index)
            save(staged)
            check_unregistered(work, study, relative, relative)
            journal.move(staged, study_dir / relative)
            entry = register_file(work, study, relative, study_dir / relative)
            added.append({"id": entry.id, "path": relative, "size": entry.size})
    return added


@dataclass(frozen=True)
class CallIdentity:
    """Who a NORA call authenticates as, and with which of their tokens."""

    user_id: int
    token_id: int


def identity_for_call(call: dict[str, Any]) -> CallIdentity:
    """The user a NORA call names, proven by one of their API tokens (``@CRYPT@`` prefix allowed).

    A project-scoped token (a job's) is for the REST API only: it opens no session and imports nothing here.
    """
    secret = str(call.get("token", "")).removeprefix("@CRYPT@")
    with archive().unit_of_work() as (work, _journal):
        token = accounts.valid_token(work, secret) if secret else None
        valid = token is not None and token.project_id is None and token.user.username == call.get("user")
        identity = CallIdentity(token.user_id, token.id) if (token and valid) else None
    if identity is None:
        raise Denied(Outcome.UNAUTHENTICATED, "the call's user and token do not match a valid API token")
    return identity
