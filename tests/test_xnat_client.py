"""The XNAT surface driven by XNAT's own Python client (xnatpy) against the portal under gunicorn
and a real Northanc: DICOM stored into Orthanc and converted by the archive, so experiments have
NIfTI with sidecars and DICOM originals. Three projects: ``plain``; ``pseudo`` (pseudonymised, its
patient's identifiers unmistakable strings); ``hidden``, where the test's users hold no role."""

from __future__ import annotations

import base64
import dataclasses
import io
import zipfile
from collections.abc import Generator, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
import requests
import xnat
from sqlalchemy import select
from xnat.exceptions import XNATLoginFailedError, XNATUploadError

from nifti_archive import accounts
from nifti_archive.catalog.analyses import create_analysis
from nifti_archive.catalog.projects import create_project, update_settings
from nifti_archive.catalog.registration import ensure_study
from nifti_archive.models import ApiToken, File, FileKind, Project, Role, RoutingRule, Study, StudyTag, Subject, SubjectTag
from portal.multipart import Writer
from portal.xnat.ids import Level, accession
from segmentation import rois
from testbed.northanc import Northanc, northanc_settings
from testbed.portal import Portal, start_portal
from tests.polling import wait_until
from tests.portal_site import PASSWORD
from tests.test_dicomweb import SECRETS, Series, part10, seg_of, store_plain_and_pseudo

# highdicom finds the reference series' one-part patient name odd when it encodes the SEG.
pytestmark = pytest.mark.filterwarnings("ignore:The string .* is unlikely to represent the intended person name")
USERS = {"viewer_a": ("plain", Role.VIEWER), "editor_a": ("plain", Role.EDITOR), "viewer_b": ("pseudo", Role.VIEWER),
         "outsider": ("hidden", Role.ADMIN)}


@dataclass
class Site:
    northanc: Northanc
    portal: Portal
    plain: Series
    pseudo: Series
    pseudonym: str
    hidden_experiment: str


def serve_site(base: Path) -> Generator[Site, None, None]:
    """The three projects and four users below ``base``, served until the generator is closed."""
    # Whatever started is stopped, also when a later step of the set-up fails.
    with ExitStack() as running:
        northanc = Northanc.start(dataclasses.replace(northanc_settings(base / "var"), secure_cookies=False))
        running.callback(northanc.stop)
        with northanc.archive.unit_of_work() as (session, journal):
            projects = {name: create_project(session, journal, northanc.archive.layout, name) for name in ("plain", "pseudo", "hidden")}
            update_settings(projects["pseudo"], pseudonymise=True)
            session.add_all([RoutingRule(project_id=projects["plain"].id, called_aet="PLAIN"),
                             RoutingRule(project_id=projects["pseudo"].id, called_aet="PSEUDO")])
            for name, (project, role) in USERS.items():
                user, _one_time = accounts.create_user(session, name)
                accounts.set_password(user, PASSWORD)
                accounts.grant_role(session, user, projects[project], role)
                if name == "editor_a":
                    editor_token = accounts.create_token(session, user, "stow").secret
            hidden_study = ensure_study(session, projects["hidden"], "H01", "S1")
            session.flush()
            hidden = accession(Level.EXPERIMENT, hidden_study.id)
        plain, pseudo, pseudonym = store_plain_and_pseudo(northanc, base)
        portal = start_portal(northanc.settings)
        running.callback(portal.stop)
        # A SEG drawn on the plain series, stored as OHIF stores one: the archive makes it an ROI.
        seg, study_id = seg_of(northanc, plain, "lesion")
        writer = Writer("application/dicom")
        stored = requests.post(f"{portal.url}/dicom-web/studies", data=writer.body([part10(seg)]), timeout=60,
                               headers={"Content-Type": writer.content_type, "Accept": "application/dicom+json",
                                        "Authorization": f"Bearer {editor_token}"})
        assert stored.status_code == 200, stored.text[:300]

        def lesion() -> list[str] | None:
            with northanc.archive.sessions() as session:
                return [roi.label for roi in rois.live_rois(session, study_id) if roi.seg_series_uid == str(seg.SeriesInstanceUID)] or None

        wait_until(lesion, 90, "the stored SEG to become an ROI")
        yield Site(northanc, portal, plain, pseudo, pseudonym, hidden)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    yield from serve_site(tmp_path_factory.mktemp("xnat"))


def connect(site: Site, user: str, password: str = PASSWORD) -> xnat.session.XNATSession:
    return xnat.connect(site.portal.url, user=user, password=password, loglevel="ERROR")


def call(site: Site, user: str | None, path: str, method: str = "GET", **options: object) -> requests.Response:
    auth = (user, PASSWORD) if user else None
    return requests.request(method, site.portal.url + path, auth=auth, timeout=60, **options)  # type: ignore[arg-type]


def archived(site: Site, project: str, path_suffix: str) -> Path:
    """The archive's file of the project whose path ends so."""
    with site.northanc.archive.sessions() as session:
        record, study, subject = session.execute(
            select(File, Study, Subject).join(Study, Study.id == File.study_id).join(Subject, Subject.id == Study.subject_id)
            .join(Project, Project.id == Subject.project_id)
            .where(Project.name == project, File.path.endswith(path_suffix), File.trash_id.is_(None))).one()
        return site.northanc.archive.layout.study_dir(project, subject.patient_id, study.study_id) / record.path


def scan_path(site: Site, project: str = "plain") -> str:
    """The XNAT path of the project's one scan."""
    with site.northanc.archive.sessions() as session:
        study = session.scalars(select(Study).join(Subject).join(Project).where(Project.name == project)).one()
        folder = session.scalars(select(File.path).where(File.study_id == study.id, File.kind == FileKind.NIFTI)).first()
        assert folder is not None
        return f"/data/experiments/{accession(Level.EXPERIMENT, study.id)}/scans/{folder.split('/')[0]}"


def test_xnatpy_walks_projects_to_files_and_downloads_a_scan_and_an_experiment(site: Site, tmp_path: Path) -> None:
    with connect(site, "viewer_a") as session:
        assert list(session.projects.keys()) == ["plain"], "only the projects the user has a role on"
        project = session.projects["plain"]
        subject = next(iter(project.subjects.values()))
        experiment = next(iter(subject.experiments.values()))
        assert experiment.__xsi_type__ == "xnat:mrSessionData"
        assert next(iter(project.experiments.values())).id == experiment.id
        assert experiment.project == "plain" and experiment.subject_id == subject.id
        scan = next(iter(experiment.scans.values()))
        assert scan.__xsi_type__ == "xnat:mrScanData"
        assert set(scan.resources.keys()) == {"NIFTI", "DICOM", "ROI", "SEG"}
        nifti_names = set(scan.resources["NIFTI"].files.keys())
        assert any(n.endswith(".nii.gz") for n in nifti_names) and any(n.endswith(".json") for n in nifti_names)
        assert len(scan.resources["DICOM"].files) == len(site.plain.instances)
        assert {n.rsplit("/", 1)[-1].split(".")[0] for n in scan.resources["ROI"].files.keys()} == {"lesion"}
        assert len(scan.resources["SEG"].files) == 1

        scan.download_dir(str(tmp_path / "scan"))
        downloaded = {p.name: p for p in (tmp_path / "scan").rglob("*") if p.is_file()}
        image = next(name for name in nifti_names if name.endswith(".nii.gz"))
        assert downloaded[image].read_bytes() == archived(site, "plain", image).read_bytes()
        dicom = [pydicom.dcmread(p) for p in (tmp_path / "scan").rglob("*.dcm")]
        assert sorted(str(d.SOPInstanceUID) for d in dicom if d.Modality != "SEG") == sorted(site.plain.instances)
        assert [d.SegmentSequence[0].SegmentLabel for d in dicom if d.Modality == "SEG"] == ["lesion"]

        experiment.download_dir(str(tmp_path / "experiment"))
        everything = {p.name for p in (tmp_path / "experiment").rglob("*") if p.is_file()}
        assert set(downloaded) <= everything

        single = scan.resources["NIFTI"].files[image]
        single.download(str(tmp_path / "one.nii.gz"), verbose=False)
        assert (tmp_path / "one.nii.gz").read_bytes() == downloaded[image].read_bytes()


def test_archive_paths_are_the_same_tree_and_every_answer_is_json(site: Site) -> None:
    assert call(site, "viewer_a", "/data/archive/projects?format=json").json() == call(site, "viewer_a", "/data/projects").json()
    for path in ("/data/nothing/here", "/data/projects/plain/nothing", "/xapi/nothing"):
        answer = call(site, "viewer_a", path)
        assert answer.status_code == 404 and answer.headers["Content-Type"].startswith("application/json"), path
    for wanted in ("xml", "csv", "html"):
        refused = call(site, "viewer_a", f"/data/projects?format={wanted}")
        assert refused.status_code == 406 and "json" in refused.json()["error"], wanted
    assert call(site, None, "/data/projects").status_code == 401


def test_a_project_without_a_role_is_not_found_anywhere(site: Site) -> None:
    for path in ("/data/projects/hidden", "/data/projects/hidden/experiments", f"/data/experiments/{site.hidden_experiment}",
                 f"/data/experiments/{site.hidden_experiment}/scans", "/data/experiments?project=hidden"):
        answer = call(site, "viewer_a", path)
        assert answer.status_code == 404, path
        assert "H01" not in answer.text
    upload = call(site, "editor_a", f"/data/experiments/{site.hidden_experiment}/scans/1/resources/QC/files/a.txt", "PUT", data=b"x")
    assert upload.status_code == 404
    listed = call(site, "viewer_a", "/data/experiments").json()["ResultSet"]["Result"]
    assert {row["project"] for row in listed} == {"plain"}


def test_the_editor_uploads_into_a_resource_and_the_viewer_may_not(site: Site, tmp_path: Path) -> None:
    with connect(site, "editor_a") as session:
        experiment = next(iter(session.projects["plain"].experiments.values()))
        scan = next(iter(experiment.scans.values()))
        resource = scan.create_resource("QC")
        resource.upload_data(b"looks fine", "notes/qc.txt")
        assert set(scan.resources["QC"].files.keys()) == {"notes/qc.txt"}
        folder = tmp_path / "plots"
        (folder / "axial").mkdir(parents=True)
        (folder / "axial" / "a.png").write_bytes(b"png")
        (folder / "b.csv").write_text("x,y")
        scan.resources["QC"].upload_dir(folder)  # as a gzipped tar, extracted by the server
        assert set(scan.resources["QC"].files.keys()) == {"notes/qc.txt", "axial/a.png", "b.csv"}
    assert archived(site, "plain", "QC/notes/qc.txt").read_bytes() == b"looks fine"
    assert archived(site, "plain", "QC/axial/a.png").read_bytes() == b"png"
    with connect(site, "viewer_a") as session:
        experiment = next(iter(session.projects["plain"].experiments.values()))
        scan = next(iter(experiment.scans.values()))
        with pytest.raises(XNATUploadError, match="403"):
            scan.resources["QC"].upload_data(b"not mine", "mine.txt")
    again = call(site, "editor_a", f"{scan_path(site)}/resources/QC/files/notes/qc.txt", "PUT", data=b"twice")
    assert again.status_code == 409


def test_uploads_with_escaping_or_odd_names_are_refused_and_write_nothing(site: Site) -> None:
    bundle = io.BytesIO()
    with zipfile.ZipFile(bundle, "w") as archive:
        archive.writestr("good.txt", "fine")
        archive.writestr("../../../escaped.txt", "out")
    with site.northanc.archive.sessions() as session:
        before = session.scalar(select(File.id).order_by(File.id.desc()).limit(1))
    base = scan_path(site)
    slip = call(site, "editor_a", f"{base}/resources/BUNDLE/files/up.zip?extract=true", "PUT", data=bundle.getvalue())
    assert slip.status_code == 400 and "escaped.txt" in slip.json()["error"]
    for odd in ("a%5Cb.txt", ".hidden", "x%01y", "c:evil"):
        refused = call(site, "editor_a", f"{base}/resources/BUNDLE/files/{odd}", "PUT", data=b"x")
        assert refused.status_code == 400, odd
    assert call(site, "editor_a", f"{base}/resources/DICOM/files/x.dcm", "PUT", data=b"x").status_code == 400
    with site.northanc.archive.sessions() as session:
        assert session.scalar(select(File.id).order_by(File.id.desc()).limit(1)) == before, "nothing indexed"
    root = site.northanc.archive.settings.archive_root
    assert not list(root.rglob("escaped.txt")) and not list(root.rglob("good.txt"))


def test_labels_tell_every_experiment_apart_and_names_like_ids_are_labels_where_no_id_matches(site: Site) -> None:
    with site.northanc.archive.unit_of_work() as (session, journal):
        hidden = session.scalars(select(Study).join(Subject).join(Project).where(Project.name == "hidden")).one()
        project = create_project(session, journal, site.northanc.archive.layout, "labels")
        accounts.grant_role(session, accounts.get_user(session, "outsider"), project, Role.VIEWER)
        # Two studies whose subject and study ids join to one string; a subject named as project
        # hidden's subject is numbered, and one whose experiment label spells hidden's experiment id.
        joined = [ensure_study(session, project, "P_1", "S"), ensure_study(session, project, "P", "1_S")]
        look_alike = ensure_study(session, project, accession(Level.SUBJECT, hidden.subject_id), "S1")
        spelled = ensure_study(session, project, "NRT", accession(Level.EXPERIMENT, hidden.id).removeprefix("NRT_"))
        session.flush()
        expected = sorted(accession(Level.EXPERIMENT, study.id) for study in [*joined, look_alike, spelled])
        hidden_subject, hidden_experiment = accession(Level.SUBJECT, hidden.subject_id), accession(Level.EXPERIMENT, hidden.id)
        look_alike_ids = accession(Level.SUBJECT, look_alike.subject_id), accession(Level.EXPERIMENT, look_alike.id)
    listed = call(site, "outsider", "/data/projects/labels/experiments").json()["ResultSet"]["Result"]
    labels = {row["label"]: row["ID"] for row in listed}
    assert sorted(labels.values()) == expected, "one label per experiment"
    assert hidden_experiment in labels
    for label, experiment_id in labels.items():
        for path in (f"/data/projects/labels/experiments/{label}", f"/data/archive/projects/labels/experiments/{label}"):
            found = call(site, "outsider", path)
            assert found.status_code == 200, (path, found.text[:200])
            assert found.json()["items"][0]["data_fields"]["ID"] == experiment_id, path
    named = call(site, "outsider", f"/data/projects/labels/subjects/{hidden_subject}")
    assert named.status_code == 200 and named.json()["items"][0]["data_fields"]["ID"] == look_alike_ids[0]
    # Outside a project the same name is read as the id it is: project hidden's subject.
    elsewhere = call(site, "outsider", f"/data/subjects/{hidden_subject}").json()
    assert elsewhere["items"][0]["data_fields"]["project"] == "hidden"
    nested = f"/data/projects/labels/subjects/{hidden_subject}/experiments"
    (only,) = call(site, "outsider", nested).json()["ResultSet"]["Result"]
    assert only["ID"] == look_alike_ids[1]
    assert call(site, "outsider", f"{nested}/{only['label']}").json()["items"][0]["data_fields"]["ID"] == only["ID"]


def test_analyses_are_not_subjects_or_experiments_in_xnat(site: Site) -> None:
    with site.northanc.archive.unit_of_work() as (session, journal):
        project = create_project(session, journal, site.northanc.archive.layout, "analysed")
        accounts.grant_role(session, accounts.get_user(session, "outsider"), project, Role.VIEWER)
        patient = ensure_study(session, project, "P1", "S1")
        analysis = create_analysis(session, journal, site.northanc.archive.layout, project, "group", "outsider")
        session.flush()
        patient_id, analysis_id = accession(Level.EXPERIMENT, patient.id), accession(Level.EXPERIMENT, analysis.id)
        analysis_subject = accession(Level.SUBJECT, analysis.subject_id)
    subjects = call(site, "outsider", "/data/projects/analysed/subjects").json()["ResultSet"]["Result"]
    assert [row["label"] for row in subjects] == ["P1"]
    experiments = call(site, "outsider", "/data/projects/analysed/experiments").json()["ResultSet"]["Result"]
    assert [row["ID"] for row in experiments] == [patient_id]
    for path in (f"/data/experiments/{analysis_id}", f"/data/subjects/{analysis_subject}",
                 f"/data/projects/analysed/subjects/{analysis_subject}", "/data/projects/analysed/subjects/ANALYSIS%23group"):
        assert call(site, "outsider", path).status_code == 404, path


def test_tags_are_custom_fields_on_subjects_and_experiments(site: Site) -> None:
    with connect(site, "editor_a") as session:
        subject = next(iter(session.projects["plain"].subjects.values()))
        experiment = next(iter(subject.experiments.values()))
        experiment.fields["reviewed"] = "true"
        subject.fields["cohort-a"] = "true"
        assert dict(experiment.fields) == {"reviewed": "true"}
        assert dict(subject.fields) == {"cohort-a": "true"}
    with site.northanc.archive.sessions() as session:
        assert session.scalars(select(StudyTag.tag)).all() == ["reviewed"]
        assert session.scalars(select(SubjectTag.tag)).all() == ["cohort-a"]
    with connect(site, "editor_a") as session:
        experiment = next(iter(session.projects["plain"].experiments.values()))
        del experiment.fields["reviewed"]
        assert dict(experiment.fields) == {}
        with pytest.raises(xnat.exceptions.XNATResponseError, match="400"):
            experiment.fields["score"] = "7"
    with connect(site, "viewer_a") as session:
        experiment = next(iter(session.projects["plain"].experiments.values()))
        with pytest.raises(xnat.exceptions.XNATResponseError, match="403"):
            experiment.fields["reviewed"] = "true"


def test_a_pseudonymised_project_shows_the_pseudonym_only(site: Site, tmp_path: Path) -> None:
    with connect(site, "viewer_b") as session:
        project = session.projects["pseudo"]
        assert [s.label for s in project.subjects.values()] == [site.pseudonym]
        experiment = next(iter(project.experiments.values()))
        experiment.download_dir(str(tmp_path / "pseudo"))
        experiment_id = experiment.id
    dicom = [pydicom.dcmread(p) for p in (tmp_path / "pseudo").rglob("*.dcm")]
    assert len(dicom) == len(site.pseudo.instances)
    assert {str(d.PatientName) for d in dicom} == {site.pseudonym}
    texts = [call(site, "viewer_b", path).content for path in (
        "/data/projects/pseudo/subjects", "/data/projects/pseudo/experiments", f"{scan_path(site, 'pseudo')}/files",
        f"/data/experiments/{experiment_id}")]
    everything = b"".join(texts) + b"".join(p.read_bytes() for p in (tmp_path / "pseudo").rglob("*") if p.is_file())
    for secret in SECRETS.values():
        assert secret.encode() not in everything, secret


def test_alias_tokens_log_in_are_kept_hashed_and_sessions_end(site: Site) -> None:
    issued = call(site, "viewer_a", "/data/services/tokens/issue").json()
    with connect(site, issued["alias"], issued["secret"]) as session:
        assert list(session.projects.keys()) == ["plain"]
    with site.northanc.archive.sessions() as session:
        token = session.scalars(select(ApiToken).where(ApiToken.name.endswith(issued["alias"]))).one()
        assert issued["secret"] not in (token.token_hash, token.prefix, token.name)
    with pytest.raises(XNATLoginFailedError):
        connect(site, "viewer_a", "not the password")
    opened = requests.put(site.portal.url + "/data/services/auth", data={"username": "viewer_a", "password": PASSWORD}, timeout=60)
    cookie = {"JSESSIONID": opened.text}
    assert requests.get(site.portal.url + "/data/auth", cookies=cookie, timeout=60).text == "User 'viewer_a' is logged in"
    requests.delete(site.portal.url + "/data/JSESSION", cookies=cookie, timeout=60)
    assert requests.get(site.portal.url + "/data/auth", cookies=cookie, timeout=60).status_code == 401
    bearer = {"Authorization": "Basic " + base64.b64encode(f"{issued['alias']}:wrong".encode()).decode()}
    assert requests.get(site.portal.url + "/data/projects", headers=bearer, timeout=60).status_code == 401
