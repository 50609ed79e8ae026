"""Project analyses (``ANALYSIS#<name>``): names, creation and listing, tags and the trash, no DICOM
ever landing in one, left out of BIDS, and through ``nora`` (local and inside a job) and the REST API."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import select
from werkzeug.serving import make_server

from nifti_archive import accounts
from nifti_archive.archive import Archive, get_project
from nifti_archive.bids.export import collect
from nifti_archive.catalog import trash
from nifti_archive.catalog.analyses import (
    ANALYSIS_PREFIX,
    ANALYSIS_STUDY,
    analysis_study,
    check_analysis_name,
    create_analysis,
    is_analysis,
    list_analyses,
)
from nifti_archive.catalog.projects import create_project
from nifti_archive.catalog.registration import Provenance, add_files, ensure_study, register_file
from nifti_archive.catalog.tags import TagLevel, add_tags
from nifti_archive.cli import main as cli_main
from nifti_archive.cli.remote import ARCHIVE_ROOT_VARIABLE, SOCKET_VARIABLE, TOKEN_VARIABLE
from nifti_archive.errors import Conflict, InvalidPath, InvalidValue, NotFound
from nifti_archive.ingest import naming
from nifti_archive.ingest.importer import ExtrasStudy
from nifti_archive.ingest.placement import subject_and_study
from nifti_archive.models import AuditEvent, IngestOverride, Project, Study, Subject
from nifti_archive.query.selection import select_files
from portal.app import create_app
from tests.conftest import Nora
from tests.portal_site import Site, SiteTemplate, copy_site
from tests.test_cli import fails, ok
from tests.test_portal_api import bearer, token_for


def put(path: Path, content: str = "data") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    return path


@pytest.fixture
def project(archive: Archive) -> str:
    with archive.unit_of_work() as (session, journal):
        create_project(session, journal, archive.layout, "group")
    return "group"


# Names

@pytest.mark.parametrize(("name", "reason"), [
    ("", "it is empty"),
    ("x" * 65, "longer than 64 characters"),
    ("a/b", "path separator"),
    ("..", "'..'"),
    ("../x", "path separator"),
    ("a..b", "'..'"),
    (".hidden", "starting with '.'"),
    ("two words", "white space"),
    ("tab\there", "white space"),
    ("a#b", "use only letters"),
    ("Müller", "use only letters"),
])
def test_bad_names_are_refused_with_the_reason(name: str, reason: str) -> None:
    with pytest.raises(InvalidValue, match="invalid analysis name") as refused:
        check_analysis_name(name)
    assert reason in str(refused.value)


@pytest.mark.parametrize("name", ["model", "x" * 64, "unet-3d_v1.2+aug", "-flag-like", "2024"])
def test_good_names_pass_unchanged(name: str) -> None:
    assert check_analysis_name(name) == name


def test_an_analysis_is_known_by_its_subject_id() -> None:
    assert is_analysis(ANALYSIS_PREFIX + "model") and not is_analysis("P001") and not is_analysis("ANALYSIS_model")
    assert trash.parse_psid("ANALYSIS#model") == ("ANALYSIS#model", None)
    assert trash.parse_psid("ANALYSIS#model#analysis") == ("ANALYSIS#model", "analysis")
    assert trash.parse_psid("P001#S1") == ("P001", "S1")


# Creating, listing, files and tags

def test_create_list_and_refuse_a_duplicate(archive: Archive, project: str) -> None:
    with archive.unit_of_work() as (session, journal):
        group = get_project(session, project)
        study = create_analysis(session, journal, archive.layout, group, "model", "alice")
        assert (study.study_id, study.subject.patient_id) == (ANALYSIS_STUDY, "ANALYSIS#model")
        ensure_study(session, group, "P001", "S1")
    folder = archive.settings.archive_root / project / "ANALYSIS#model" / "analysis"
    assert folder.is_dir()
    with archive.unit_of_work() as (session, journal):
        group = get_project(session, project)
        for name in ("model", "MODEL"):
            with pytest.raises(Conflict, match="has the analysis 'model' already"):
                create_analysis(session, journal, archive.layout, group, name, "bob")
        with pytest.raises(InvalidValue, match="invalid analysis name '../x'"):
            create_analysis(session, journal, archive.layout, group, "../x", "bob")
        create_analysis(session, journal, archive.layout, group, "atlas", "bob")
    with archive.sessions() as session:
        group = get_project(session, project)
        listed = list_analyses(session, group)
        assert [(a.name, a.files, a.subject_tags, a.study_tags) for a in listed] == [("atlas", 0, [], []), ("model", 0, [], [])]
        assert analysis_study(session, group, "model").id == listed[1].study_id
        with pytest.raises(NotFound, match="no analysis 'missing' in project 'group'"):
            analysis_study(session, group, "missing")
        made = session.scalars(select(AuditEvent.username).where(AuditEvent.detail == "ANALYSIS#model")).all()
        assert made == ["alice"], "who made it is on record"
    assert not (archive.settings.archive_root / project / "ANALYSIS#..").exists()


def test_files_tags_and_provenance_as_in_a_study(archive: Archive, project: str) -> None:
    root = archive.settings.archive_root / project
    with archive.unit_of_work() as (session, journal):
        group = get_project(session, project)
        patient = ensure_study(session, group, "P001", "S1")
        source = register_file(session, patient, "t1/s1.nii", put(root / "P001/S1/t1/s1.nii"))
        study = create_analysis(session, journal, archive.layout, group, "model", "alice")
        added = add_files(session, archive.layout, group, [put(root / "ANALYSIS#model/analysis/weights/model.pt")], ["trained"])
        derived = register_file(session, study, "labels.json", put(root / "ANALYSIS#model/analysis/labels.json"),
                                provenance=Provenance(derived_from_id=source.id))
        add_tags(session, TagLevel.SUBJECT, [study.subject_id], ["unet"])
        add_tags(session, TagLevel.STUDY, [study.id], ["v1"])
        assert added[0].study_id == study.id and derived.derived_from_id == source.id
        with pytest.raises(InvalidPath, match="its files lie in ANALYSIS#model/analysis/"):
            add_files(session, archive.layout, group, [put(root / "ANALYSIS#model/other/x.txt")])
        with pytest.raises(InvalidPath, match="invalid analysis folder 'ANALYSIS#.x'"):
            add_files(session, archive.layout, group, [put(root / "ANALYSIS#.x/analysis/x.txt")])
    with archive.sessions() as session:
        group = get_project(session, project)
        [listed] = list_analyses(session, group)
        assert (listed.files, listed.subject_tags, listed.study_tags) == (2, ["unet"], ["v1"])
        assert [f.path for f in select_files(session, group, "PTAG:unet")] == ["labels.json", "weights/model.pt"]
        assert [f.subject for f in select_files(session, group, "FTAG:trained")] == ["ANALYSIS#model"]


def test_trash_and_restore_an_analysis(archive: Archive, project: str) -> None:
    root = archive.settings.archive_root / project
    with archive.unit_of_work() as (session, journal):
        group = get_project(session, project)
        create_analysis(session, journal, archive.layout, group, "model", "alice")
        add_files(session, archive.layout, group, [put(root / "ANALYSIS#model/analysis/model.pt")])
    with archive.unit_of_work() as (session, journal):
        entry = trash.delete_subjects_or_studies(session, journal, archive.layout, get_project(session, project),
                                                 ["ANALYSIS#model"], "alice").id
    assert not (root / "ANALYSIS#model").exists()
    assert (root / ".trash" / str(entry) / "ANALYSIS#model/analysis/model.pt").is_file()
    with archive.sessions() as session:
        group = get_project(session, project)
        assert list_analyses(session, group) == []
        with pytest.raises(NotFound):
            analysis_study(session, group, "model")
    with archive.unit_of_work() as (session, journal):
        assert trash.restore(session, journal, archive.layout, get_project(session, project), entry) == 1
    assert (root / "ANALYSIS#model/analysis/model.pt").read_text() == "data"
    with archive.sessions() as session:
        assert [(a.name, a.files) for a in list_analyses(session, get_project(session, project))] == [("model", 1)]


# DICOM never lands in an analysis

@pytest.mark.parametrize("patient_id", ["ANALYSIS#model", "analysis#model", "Analysis#Model/../x"])
def test_a_patient_id_naming_an_analysis_is_made_safe(patient_id: str) -> None:
    rendered = naming.render("{PatientID}", {"PatientID": patient_id})
    assert "#" not in rendered and not is_analysis(rendered)


def test_ingest_places_such_a_patient_beside_the_analysis_never_in_it(archive: Archive, project: str) -> None:
    tags = {"PatientID": "ANALYSIS#model", "StudyInstanceUID": "1.2.3", "StudyDate": "20240102", "AccessionNumber": "A1"}
    with archive.unit_of_work() as (session, journal):
        group = get_project(session, project)
        analysis = create_analysis(session, journal, archive.layout, group, "model", "alice")
        subject, study = subject_and_study(session, archive, group, tags, None)
        assert (subject.patient_id, study.study_id) == ("ANALYSIS_model", "20240102_A1")
        assert session.scalars(select(Study.id).where(Study.subject_id == analysis.subject_id)).all() == [analysis.id]


def test_an_import_or_override_naming_an_analysis_is_refused(archive: Archive, project: str) -> None:
    for subject in ("ANALYSIS#model", "analysis#model"):
        with pytest.raises(InvalidPath, match="names a project analysis, which holds no DICOM"):
            ExtrasStudy(subject, "S1")
    with archive.unit_of_work() as (session, journal):
        group = get_project(session, project)
        create_analysis(session, journal, archive.layout, group, "model", "alice")
        override = IngestOverride(series_instance_uid="1.2.3.4", project_id=group.id, patient_id="ANALYSIS#model")
        with pytest.raises(InvalidPath, match="names a project analysis"):
            subject_and_study(session, archive, group, {"PatientID": "P9", "StudyInstanceUID": "1.2.3"}, override)


# BIDS

def test_bids_export_leaves_analyses_out(archive: Archive, project: str) -> None:
    root = archive.settings.archive_root / project
    converted = Provenance(converter="dcm2niix", converter_version="v1.0.20240202")
    with archive.unit_of_work() as (session, journal):
        group = get_project(session, project)
        patient = ensure_study(session, group, "P001", "S1")
        register_file(session, patient, "001_t1/s001.nii.gz", put(root / "P001/S1/001_t1/s001.nii.gz"), provenance=converted)
        study = create_analysis(session, journal, archive.layout, group, "template", "alice")
        register_file(session, study, "001_t1/mean.nii.gz", put(root / "ANALYSIS#template/analysis/001_t1/mean.nii.gz"),
                      provenance=converted)
    with archive.sessions() as session:
        series = collect(session, archive.layout, get_project(session, project))
    assert [(s.subject, s.path) for s in series] == [("P001", "001_t1/s001.nii.gz")]


# nora

def test_nora_creates_lists_deletes_and_restores_analyses(nora_in_process: Nora, archive: Archive) -> None:
    ok(nora_in_process("-c", "group"))
    created = ok(nora_in_process("-p", "group", "--create_analysis", "model"))
    assert created == f"created analysis model in project group: {archive.settings.archive_root / 'group/ANALYSIS#model/analysis'}\n"
    fails(nora_in_process("-p", "group", "--create_analysis", "../x"), "invalid analysis name '../x': it contains a path separator")
    fails(nora_in_process("-p", "group", "--create_analysis", "model"), "has the analysis 'model' already")
    fails(nora_in_process("-p", "group", "--create_analysis", ""), "invalid analysis name '': it is empty")
    assert ok(nora_in_process("-p", "group", "--analyses")).startswith("model\t0 file(s)\t")
    [listed] = json.loads(ok(nora_in_process("-p", "group", "--analyses", "--json")))
    assert (listed["name"], listed["subject"], listed["files"]) == ("model", "ANALYSIS#model", 0)
    moved = ok(nora_in_process("-p", "group", "--del_pat", "ANALYSIS#model"))
    assert ok(nora_in_process("-p", "group", "--analyses")) == ""
    ok(nora_in_process("-p", "group", "--restore", moved.split("trash entry ")[1].split(" ")[0]))
    assert ok(nora_in_process("-p", "group", "--analyses")).startswith("model\t")


# REST API, and nora inside a job

@pytest.fixture
def site(tmp_path: Path, portal_site: SiteTemplate) -> Iterator[tuple[Flask, Site]]:
    built = copy_site(portal_site, tmp_path / "var")
    yield create_app(built.archive.settings, built.archive), built
    built.archive.close()


def test_viewers_list_editors_create_strangers_see_nothing(site: tuple[Flask, Site]) -> None:
    app, built = site
    client = app.test_client()
    url = "/api/v1/projects/alpha/analyses"
    viewer, editor = bearer(token_for(built.archive, "viewer")), bearer(token_for(built.archive, "editor"))
    assert client.get(url, headers=viewer).json == {"analyses": []}
    refused = client.post(url, headers=viewer, json={"name": "model"})
    assert refused.status_code == 403 and "editor" in refused.json["error"]
    answer = client.post(url, headers=editor, json={"name": "model"})
    assert answer.status_code == 201, answer.json
    assert (answer.json["name"], answer.json["subject"], answer.json["files"]) == ("model", "ANALYSIS#model", 0)
    assert [a["name"] for a in client.get(url, headers=viewer).json["analyses"]] == ["model"]
    bad = client.post(url, headers=editor, json={"name": "../x"})
    assert bad.status_code == 400 and bad.json["error"] == "invalid analysis name '../x': it contains a path separator"
    assert client.post(url, headers=editor, json={"title": "model"}).status_code == 400
    assert client.post(url, headers=editor, json={"name": "model"}).status_code == 409
    stranger = bearer(token_for(built.archive, "norole"))
    for method in ("GET", "POST"):
        hidden = client.open(url, method=method, headers=stranger, json={"name": "other"})
        assert hidden.status_code == 404 and "alpha" not in hidden.json["error"]
    assert client.get(url).status_code == 401
    rows = client.get("/api/v1/projects/alpha/studies", headers=viewer).json["rows"]
    assert {(r["subject"], r["analysis"]) for r in rows} == {("ANALYSIS#model", True), ("P01", False), ("P02", False), ("P03", False)}


def test_nora_in_a_job_creates_and_lists_through_the_api(site: tuple[Flask, Site], tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    app, built = site
    with built.archive.unit_of_work() as (session, _journal):
        issued = accounts.create_token(session, accounts.get_user(session, "editor"), "run", 1)
        issued.token.project_id = session.scalars(select(Project.id).where(Project.name == "alpha")).one()
        secret = issued.secret
    socket_path = tmp_path / "api.sock"
    server = make_server(f"unix://{socket_path}", 0, app, threaded=True)
    serving = threading.Thread(target=server.serve_forever, daemon=True)
    serving.start()
    monkeypatch.setenv(TOKEN_VARIABLE, secret)
    monkeypatch.setenv(SOCKET_VARIABLE, str(socket_path))
    monkeypatch.setenv(ARCHIVE_ROOT_VARIABLE, "/archive")
    try:
        out, err = (tmp_path / "out").open("w+"), (tmp_path / "err").open("w+")
        with out, err:
            codes = [cli_main.run(argv, out, err) for argv in (
                ["-p", "alpha", "--create_analysis", "stats"], ["-p", "alpha", "--create_analysis", "../x"],
                ["-p", "alpha", "--analyses", "--json"],
            )]
    finally:
        server.shutdown()
        serving.join()
    printed, errors = (tmp_path / "out").read_text(), (tmp_path / "err").read_text()
    assert codes == [0, 2, 0], errors
    assert printed.startswith("created analysis stats in project alpha: /archive/alpha/ANALYSIS#stats/analysis\n")
    assert "invalid analysis name '../x'" in errors
    assert [a["name"] for a in json.loads(printed.split("\n", 1)[1])] == ["stats"]
    with built.archive.sessions() as session:
        assert session.scalars(select(Subject.patient_id).where(Subject.patient_id.startswith(ANALYSIS_PREFIX))).all() == [
            "ANALYSIS#stats"]
