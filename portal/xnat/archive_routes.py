"""XNAT's archive tree over the archive: projects, subjects, experiments (studies), scans
(series folders), resources and files; ``/data/archive/...`` is the same tree (``archive_alias``)."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar
from urllib.parse import quote

from flask import Blueprint, Response, g, jsonify, request
from sqlalchemy import func, select

from nifti_archive.catalog.analyses import analysis_subjects
from nifti_archive.catalog.tags import TagLevel, add_tags, remove_tags
from nifti_archive.errors import InvalidValue, NotFound
from nifti_archive.models import File, FileKind, Project, Roi, Role, Study, Subject
from nifti_archive.orthanc_api import get_json, orthanc_for
from nifti_archive.zipstream import Entry, file_pieces, zipped
from portal.access import may_see_identity
from portal.api.archive import place_files, send_study_file
from portal.auth import archive, csrf_exempt, db, logged_in, project_role, projects_with_roles
from portal.dicomweb_identity import pseudonymise_part10
from portal.xnat import catalog, credentials, fields, unpack
from portal.xnat.catalog import Scan, ScanResource, SessionType
from portal.xnat.locate import Located, located, study_project, subject_project
from portal.xnat.results import Child, Format, item, negotiate, result_set

blueprint = Blueprint("xnat_archive", __name__, url_prefix="/data")
blueprint.before_request(credentials.authenticate)
View = TypeVar("View", bound=Callable[..., Any])
# The three ways XNAT addresses an experiment; every experiment route answers on each.
EXPERIMENT_PATHS = (
    "/experiments/<experiment>",
    "/projects/<project>/experiments/<experiment>",
    "/projects/<project>/subjects/<subject>/experiments/<experiment>",
)
ALL_SCANS = "ALL"
JSON_ONLY = (Format.JSON,)
FILE_FORMATS = (Format.JSON, Format.ZIP)


def experiment_route(suffix: str, methods: Sequence[str] = ("GET",)) -> Callable[[View], View]:
    """Registers the view on ``suffix`` below each of XNAT's experiment paths."""

    def register(view: View) -> View:
        for path in EXPERIMENT_PATHS:
            blueprint.add_url_rule(path + suffix, view_func=view, methods=list(methods))
        return view

    return register


def _records(body: Callable[[], Any]) -> Any:
    """A record answer in the one format served for records (JSON), 406 for any other asked."""
    negotiate(request.args.get("format"), JSON_ONLY, Format.JSON)
    return jsonify(body())


def _identity() -> bool:
    return may_see_identity(g.project, g.role)


# ---- projects and subjects -------------------------------------------------------------------

def _project_row(project: Project) -> dict[str, object]:
    return {"ID": project.name, "name": project.name, "secondary_ID": project.name, "description": project.description,
            "URI": f"/data/projects/{quote(project.name)}"}


@blueprint.route("/projects")
@logged_in
def projects() -> Any:
    return _records(lambda: result_set((_project_row(p) for p, _role in projects_with_roles()), "Projects"))


@blueprint.route("/projects/<project>")
@project_role(Role.VIEWER)
def project(project: str) -> Any:
    return _records(lambda: item("xnat:projectData", _project_row(g.project)))


def _subject_row(found: Located) -> dict[str, object]:
    return {"ID": found.subject_id, "label": found.subject.patient_id, "project": found.project.name,
            "insert_date": found.subject.created_at.isoformat(sep=" "),
            "URI": f"/data/projects/{quote(found.project.name)}/subjects/{found.subject_id}"}


@blueprint.route("/projects/<project>/subjects")
@project_role(Role.VIEWER)
def subjects(project: str) -> Any:
    # An analysis (ANALYSIS#name) is the project's, not a participant: XNAT has no place for it.
    rows = db().scalars(select(Subject).where(Subject.project_id == g.project.id, Subject.trash_id.is_(None),
                                              ~analysis_subjects()).order_by(Subject.patient_id))
    return _records(lambda: result_set((_subject_row(Located(g.project, s)) for s in rows), "Subjects"))


def _subject_item() -> dict[str, Any]:
    found = located()
    tags = [t.tag for t in found.subject.tags]
    return item("xnat:subjectData", _subject_row(found), [Child("fields/field", "xnat:subjectData_field", fields.tag_fields(tags))],
                found.subject.created_at)


@blueprint.route("/projects/<project>/subjects/<subject>")
@blueprint.route("/subjects/<subject>")
@project_role(Role.VIEWER, via=subject_project)
def subject(subject: str, project: str | None = None) -> Any:
    return _records(_subject_item)


def _change_tags(level: TagLevel, owner: int) -> Any:
    changes = fields.tag_changes(request.args.items(multi=True))
    with archive().unit_of_work() as (work, _journal):
        if changes.add:
            add_tags(work, level, [owner], changes.add)
        if changes.remove:
            remove_tags(work, level, [owner], changes.remove)
    return Response("", status=200)


@blueprint.route("/projects/<project>/subjects/<subject>", methods=["PUT"])
@project_role(Role.EDITOR, via=subject_project)
@csrf_exempt
def set_subject_fields(subject: str, project: str) -> Any:
    """Sets the subject's tags through its custom fields."""
    return _change_tags(TagLevel.SUBJECT, located().subject.id)


# ---- experiments -----------------------------------------------------------------------------

@dataclass(frozen=True)
class StudyRow:
    subject: Subject
    study: Study
    kind: SessionType


def _study_rows(project: Project, subject_id: int | None = None) -> list[StudyRow]:
    """The project's live studies (or a subject's) with their session type, in one query and one
    small sidecar read per study (the first JSON of its series, as converted)."""
    query = (select(Subject, Study).join(Study, Study.subject_id == Subject.id)
             .where(Subject.project_id == project.id, Subject.trash_id.is_(None), Study.trash_id.is_(None),
                    ~analysis_subjects())
             .order_by(Subject.patient_id, Study.study_id))
    sidecars = (select(File.study_id, func.min(File.path)).join(Study, Study.id == File.study_id)
                .join(Subject, Subject.id == Study.subject_id)
                .where(Subject.project_id == project.id, File.kind == FileKind.JSON, File.trash_id.is_(None),
                       ~File.path.startswith(f"{catalog.ROI_FOLDER}/"))
                .group_by(File.study_id))
    if subject_id is not None:
        query, sidecars = query.where(Subject.id == subject_id), sidecars.where(Subject.id == subject_id)
    first_sidecar = dict(db().execute(sidecars).tuples().all())
    layout = archive().layout
    rows = []
    for subject_record, study in db().execute(query).tuples():
        path = first_sidecar.get(study.id)
        modality = catalog.modality_of(layout.study_dir(project.name, subject_record.patient_id, study.study_id) / path) if path else ""
        rows.append(StudyRow(subject_record, study, SessionType.of(modality)))
    return rows


def _experiment_fields(row: StudyRow, project: Project, identity: bool) -> dict[str, object]:
    found = Located(project, row.subject, row.study)
    return {
        "ID": found.experiment_id, "label": found.experiment_label, "project": project.name, "subject_ID": found.subject_id,
        "subject_label": row.subject.patient_id, "xsiType": row.kind.session_xsi,
        "date": row.study.study_date.isoformat() if row.study.study_date else None, "note": row.study.description,
        "modality": row.kind.name if row.kind is not SessionType.OTHER else None,
        "UID": row.study.study_instance_uid if identity else None,
        "insert_date": row.study.created_at.isoformat(sep=" "),
        "URI": f"/data/experiments/{found.experiment_id}",
    }


def _experiment_rows(project: Project, identity: bool, subject_id: int | None = None) -> list[dict[str, object]]:
    return [_experiment_fields(row, project, identity) for row in _study_rows(project, subject_id)]


@blueprint.route("/projects/<project>/experiments")
@project_role(Role.VIEWER)
def project_experiments(project: str) -> Any:
    return _records(lambda: result_set(_experiment_rows(g.project, _identity()), "Experiments"))


@blueprint.route("/projects/<project>/subjects/<subject>/experiments")
@project_role(Role.VIEWER, via=subject_project)
def subject_experiments(project: str, subject: str) -> Any:
    return _records(lambda: result_set(_experiment_rows(g.project, _identity(), located().subject.id), "Experiments"))


@blueprint.route("/experiments")
@logged_in
def experiments() -> Any:
    """Experiments of every project the caller has a role on, or of ``project=`` (404 without a role there)."""
    wanted = request.args.get("project")
    chosen = [(p, r) for p, r in projects_with_roles() if wanted is None or p.name == wanted]
    if wanted is not None and not chosen:
        raise NotFound("no such project, or you have no role on it")
    return _records(lambda: result_set(
        [row for p, r in chosen for row in _experiment_rows(p, may_see_identity(p, r))], "Experiments"))


def _study_files(study: Study) -> list[File]:
    return list(db().scalars(select(File).where(File.study_id == study.id, File.trash_id.is_(None)).order_by(File.path)))


def _seg_series(files: Sequence[File]) -> dict[int, str]:
    """Orthanc's series ids of the DICOM SEGs that carry the study's ROIs, by ROI file id."""
    rows = db().execute(select(Roi.file_id, Roi.seg_series_uid).where(
        Roi.file_id.in_([f.id for f in files if f.kind is FileKind.ROI]), Roi.seg_series_uid.is_not(None))).tuples()
    carried = {file_id: uid for file_id, uid in rows if uid}
    if not carried:
        return {}
    rest = orthanc_for(archive().settings)
    series = {}
    for uid in set(carried.values()):
        found = [entry["ID"] for entry in rest.post("/tools/lookup", uid.encode(), "text/plain") if entry.get("Type") == "Series"]
        if found:
            series[uid] = str(found[0])
    return {file_id: series[uid] for file_id, uid in carried.items() if uid in series}


def _scans() -> dict[str, Scan]:
    study = located().study
    assert study is not None
    files = _study_files(study)
    return catalog.scans_of(files, _seg_series(files))


def _row_of_located() -> StudyRow:
    found = located()
    assert found.study is not None
    return next(r for r in _study_rows(found.project, found.subject.id) if r.study.id == found.study.id)


@experiment_route("")
@project_role(Role.VIEWER, via=study_project)
def experiment(**address: str) -> Any:
    def body() -> dict[str, Any]:
        row = _row_of_located()
        tags = [t.tag for t in row.study.tags]
        return item(row.kind.session_xsi, _experiment_fields(row, g.project, _identity()),
                    [Child("fields/field", "xnat:experimentData_field", fields.tag_fields(tags))], row.study.created_at)

    return _records(body)


@experiment_route("", methods=("PUT",))
@project_role(Role.EDITOR, via=study_project)
@csrf_exempt
def set_experiment_fields(**address: str) -> Any:
    """Sets the study's tags through its custom fields."""
    study = located().study
    assert study is not None
    return _change_tags(TagLevel.STUDY, study.id)


@experiment_route("/resources")
@project_role(Role.VIEWER, via=study_project)
def experiment_resources(**address: str) -> Any:
    """Session-level resources: none are kept here (a study's files all belong to its scans)."""
    return _records(lambda: result_set([], "Resources"))


# ---- scans -----------------------------------------------------------------------------------

def _sidecar(scan: Scan) -> dict[str, Any]:
    found = located()
    if scan.sidecar is None or found.study is None:
        return {}
    path = archive().layout.study_dir(found.project.name, found.subject.patient_id, found.study.study_id) / scan.sidecar.path
    try:
        loaded = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _scan_fields(scan: Scan) -> dict[str, object]:
    sidecar = _sidecar(scan)
    modality = str(sidecar.get("Modality", ""))
    found = located()
    return {
        "ID": scan.id, "type": scan.type, "series_description": sidecar.get("SeriesDescription", scan.type),
        "xsiType": SessionType.of(modality).scan_xsi, "modality": modality or None, "quality": "usable",
        "project": found.project.name, "image_session_ID": found.experiment_id,
        "URI": f"/data/experiments/{found.experiment_id}/scans/{quote(scan.id)}",
    }


def _scan(scan_id: str) -> Scan:
    scan = _scans().get(scan_id)
    if scan is None:
        raise NotFound(f"no scan {scan_id[:80]!r} in this experiment")
    return scan


@experiment_route("/scans")
@project_role(Role.VIEWER, via=study_project)
def scans(**address: str) -> Any:
    return _records(lambda: result_set((_scan_fields(s) for s in _scans().values()), "Scans"))


@experiment_route("/scans/<scan>")
@project_role(Role.VIEWER, via=study_project)
def scan(scan: str, **address: str) -> Any:
    def body() -> dict[str, Any]:
        found = _scan(scan)
        described = _scan_fields(found)
        return item(str(described["xsiType"]), described)

    return _records(body)


# ---- resources and files ---------------------------------------------------------------------

@dataclass(frozen=True)
class Listed:
    """One file of a resource, as listed and as zipped."""

    resource: str
    name: str
    size: int
    pieces: Callable[[], Iterator[bytes]]
    modified: datetime
    kind: str = ""
    # Below the study folder; none for DICOM, which Orthanc holds.
    path: str = ""


def _orthanc_instances(series: Sequence[str]) -> list[tuple[str, str, int]]:
    """(instance id, SOP instance UID, size) of the series' instances in Orthanc."""
    rest = orthanc_for(archive().settings)
    found = []
    for series_id in series:
        for instance in get_json(rest, f"/series/{series_id}/instances"):
            found.append((str(instance["ID"]), str(instance["MainDicomTags"].get("SOPInstanceUID", instance["ID"])),
                          int(instance.get("FileSize", 0))))
    return sorted(found, key=lambda entry: entry[1])


def _dicom_pieces(instance_id: str) -> Callable[[], Iterator[bytes]]:
    """The instance's Part-10 bytes, rewritten for a caller who may not see identities."""
    identity, pseudonym, rest = _identity(), located().subject.patient_id, orthanc_for(archive().settings)

    def pieces() -> Iterator[bytes]:
        # Runs as the zip is sent, after the request's context is gone: everything it needs is bound above.
        data = rest.dicom(instance_id)
        yield data if identity else pseudonymise_part10(data, pseudonym)

    return pieces


def _resource_of(scan: Scan, label: str) -> ScanResource:
    """The scan's resource; one a user may upload into exists, empty, before its first file
    (XNAT's clients create a resource, then upload into it)."""
    resource = scan.resources.get(label)
    if resource is None and catalog.writable(label):
        return ScanResource(label)
    if resource is None:
        raise NotFound(f"no resource {label[:80]!r} in scan {scan.id[:80]!r}")
    return resource


def _listed(scan: Scan, label: str) -> list[Listed]:
    resource = _resource_of(scan, label)
    found = located()
    assert found.study is not None
    if label in catalog.IN_ORTHANC:
        stamp = found.study.created_at
        return [Listed(label, f"{uid}.dcm", size, _dicom_pieces(instance), stamp, "DICOM")
                for instance, uid, size in _orthanc_instances(resource.orthanc_series)]
    study_dir = archive().layout.study_dir(found.project.name, found.subject.patient_id, found.study.study_id)
    return [Listed(label, catalog.relative_name(f, label), f.size, partial(file_pieces, str(study_dir / f.path)),
                   f.created_at, f.kind.value, f.path) for f in resource.files]


def _file_rows(scan: Scan, listed: Sequence[Listed]) -> list[dict[str, object]]:
    base = f"/data/experiments/{located().experiment_id}/scans/{quote(scan.id)}"
    return [{"Name": entry.name, "Size": entry.size, "collection": entry.resource, "file_format": entry.kind,
             "file_content": "", "file_tags": "", "digest": "", "cat_ID": scan.id,
             "URI": f"{base}/resources/{quote(entry.resource)}/files/{quote(entry.name)}"} for entry in listed]


def _zip_answer(entries: Sequence[tuple[Scan, Listed]], name: str) -> Response:
    label = located().experiment_label
    zipped_entries = (Entry(f"{label}/scans/{s.id}/resources/{e.resource}/files/{e.name}", e.pieces(), e.modified.astimezone(UTC))
                      for s, e in entries)
    response = Response(zipped(zipped_entries), mimetype="application/zip", direct_passthrough=True)
    response.headers["Content-Disposition"] = f'attachment; filename="{name}.zip"'
    return response


def _files_answer(entries: list[tuple[Scan, Listed]], name: str) -> Any:
    chosen = negotiate(request.args.get("format"), FILE_FORMATS, Format.JSON)
    if chosen is Format.ZIP:
        return _zip_answer(entries, name)
    return jsonify(result_set([row for s, e in entries for row in _file_rows(s, [e])], "Files"))


def _resource_row(scan: Scan, label: str) -> dict[str, object]:
    resource = _resource_of(scan, label)
    count = len(resource.files) if label not in catalog.IN_ORTHANC else ""
    size = resource.size if label not in catalog.IN_ORTHANC else ""
    return {"xnat_abstractresource_id": label, "label": label, "element_name": "xnat:resourceCatalog", "category": "scans",
            "cat_id": scan.id, "format": label, "content": "", "file_count": count, "file_size": size, "tags": ""}


@experiment_route("/scans/<scan>/resources")
@project_role(Role.VIEWER, via=study_project)
def resources(scan: str, **address: str) -> Any:
    def body() -> dict[str, Any]:
        found = _scan(scan)
        return result_set((_resource_row(found, label) for label in sorted(found.resources)), "Resources")

    return _records(body)


@experiment_route("/scans/<scan>/resources/<resource>")
@project_role(Role.VIEWER, via=study_project)
def resource(scan: str, resource: str, **address: str) -> Any:
    def body() -> dict[str, Any]:
        return item("xnat:resourceCatalog", _resource_row(_scan(scan), resource))

    return _records(body)


@experiment_route("/scans/<scan>/resources/<resource>", methods=("PUT",))
@project_role(Role.EDITOR, via=study_project)
@csrf_exempt
def create_resource(scan: str, resource: str, **address: str) -> Any:
    """A new resource is a name to upload into: it exists once a file is in it."""
    _scan(scan)
    catalog.upload_path(scan, resource, "name")
    return Response("", status=200)


@experiment_route("/scans/<scan>/resources/<resource>/files")
@project_role(Role.VIEWER, via=study_project)
def resource_files(scan: str, resource: str, **address: str) -> Any:
    found = _scan(scan)
    return _files_answer([(found, e) for e in _listed(found, resource)], f"{scan}_{resource}")


@experiment_route("/scans/<scan>/files")
@project_role(Role.VIEWER, via=study_project)
def scan_files(scan: str, **address: str) -> Any:
    """The files of every resource of a scan, or of several (``A,B``) or ``ALL`` scans."""
    every = _scans()
    chosen = list(every.values()) if scan == ALL_SCANS else [every.get(s) for s in scan.split(",")]
    if any(s is None for s in chosen):
        raise NotFound(f"no scan {scan[:80]!r} in this experiment")
    entries = [(s, e) for s in chosen if s is not None for label in sorted(s.resources) for e in _listed(s, label)]
    return _files_answer(entries, located().experiment_label if scan == ALL_SCANS else scan)


@experiment_route("/scans/<scan>/resources/<resource>/files/<path:name>")
@project_role(Role.VIEWER, via=study_project)
def file(scan: str, resource: str, name: str, **address: str) -> Any:
    found = located()
    assert found.study is not None
    if resource in catalog.IN_ORTHANC:
        listed = next((e for e in _listed(_scan(scan), resource) if e.name == name), None)
        if listed is None:
            raise NotFound(f"no file {name[:80]!r} in resource {resource[:80]!r}")
        response = Response(listed.pieces(), mimetype="application/dicom")
        response.headers["Content-Disposition"] = f'attachment; filename="{quote(name)}"'
        return response
    # One indexed lookup rather than the scan's whole listing: this is the path of every download.
    records = db().scalars(select(File).where(File.study_id == found.study.id, File.trash_id.is_(None),
                                              File.path.in_(catalog.candidate_paths(scan, resource, name))))
    record = next((r for r in records if catalog.holds(scan, resource, r)), None)
    if record is None:
        raise NotFound(f"no file {name[:80]!r} in resource {resource[:80]!r} of scan {scan[:80]!r}")
    return send_study_file(archive().layout.study_dir(found.project.name, found.subject.patient_id, found.study.study_id), record.path)


def _uploaded(save_to: Path) -> None:
    upload = next(iter(request.files.values()), None)
    if upload is not None:
        upload.save(save_to)
        return
    with save_to.open("wb") as sink:
        while block := request.stream.read(1 << 20):
            sink.write(block)


@experiment_route("/scans/<scan>/resources/<resource>/files/<path:name>", methods=("PUT",))
@project_role(Role.EDITOR, via=study_project)
@csrf_exempt
def upload(scan: str, resource: str, name: str, **address: str) -> Any:
    """Upload a file into a scan's resource (``extract=true``: a zip or tar, unpacked into it);
    every name is checked before anything is written, and a name already there is a 409."""
    found = located()
    assert found.study is not None
    _scan(scan)
    target = catalog.upload_path(scan, resource, name)
    if request.args.get("extract", "").lower() != "true":
        placed = place_files(found.subject, found.study, [(_uploaded, target)])
        return jsonify({"files": placed}), 201
    spool = archive().settings.var_dir / "uploads"
    spool.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=spool) as scratch:
        bundle = Path(scratch) / "bundle"
        _uploaded(bundle)
        with unpack.members(bundle, archive().settings.import_max_bytes) as inside:
            if not inside:
                raise InvalidValue(f"{PurePosixPath(name).name!r} holds no files to extract")
            placed = place_files(found.subject, found.study,
                                 [(m.save, catalog.upload_path(scan, resource, m.name)) for m in inside])
    return jsonify({"files": placed}), 201

