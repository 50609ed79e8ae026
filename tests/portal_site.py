"""A populated site for the portal's tests: two projects, a user per role, studies with real NIfTI.

The NIfTI files are dcm2niix's reference outputs from tests/data, copied into the
projects' trees and registered, so the viewer shows scanner geometry, not a synthetic volume.
"""

from __future__ import annotations

import json
import secrets
import shutil
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path

from nifti_archive import accounts
from nifti_archive.archive import Archive, get_project
from nifti_archive.catalog.projects import create_project
from nifti_archive.catalog.registration import add_files, ensure_study
from nifti_archive.catalog.tags import TagLevel, add_tags
from nifti_archive.installation import write_secrets
from nifti_archive.models import (
    JobRun,
    JobState,
    PacsPeer,
    PullCohort,
    RetrieveMethod,
    Role,
    SavedBatch,
    SharedLink,
    Study,
    SubjectIdentity,
    ViewerPreset,
)
from nifti_archive.permissions import secure_archive_root
from nifti_archive.readings import service
from nifti_archive.readings.config import parse_config
from nifti_archive.settings import Settings
from segmentation import markers
from testbed import TEST_PASSWORD_COST
from tests.reference import DATA

PASSWORD = "correct horse battery"
ROLES = ("viewer", "reader", "editor", "admin")
# Reference volumes: an axial and a sagittal acquisition, so orientation mistakes show.
AXIAL = DATA / "dcm_qa" / "Ref" / "ax_asc_35sl_6.nii"
SAGITTAL = DATA / "dcm_qa" / "Ref" / "sag_asc_36sl_19.nii"
SUBJECTS = (
    ("P01", "S1", date(2021, 3, 4), "MR head", "Jane^Doe"),
    ("P02", "S1", date(2022, 6, 1), "MR head follow-up", "John^Roe"),
    ("P03", "S1", date(2023, 1, 9), "CT chest", "Ann^Poe"),
)


@dataclass
class Site:
    archive: Archive
    studies: dict[str, int] = field(default_factory=dict)
    files: dict[str, int] = field(default_factory=dict)
    other_study: int = 0
    other_file: int = 0
    run: int = 0
    link: str = ""
    pull: int = 0
    reading: int = 0
    users: dict[str, int] = field(default_factory=dict)
    tokens: dict[str, int] = field(default_factory=dict)


def _nifti(archive: Archive, project: str, subject: str, study: str, source: Path, folder: str) -> Path:
    target = archive.layout.study_dir(project, subject, study) / folder / source.name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return target


def _open(var: Path, **settings: object) -> Archive:
    site_settings = Settings(
        var_dir=var, database_url=f"sqlite:///{var / 'archive.sqlite'}", archive_root=var / "archive", log_dir=var / "log",
        **{"password_cost": TEST_PASSWORD_COST, **settings},  # type: ignore[arg-type]  # the callers' keyword settings
    )
    # As `nora --admin init` leaves it: batch jobs read the tree as the jobs group.
    secure_archive_root(site_settings)
    return Archive(site_settings)


def site_archive(var: Path, sqlite_template: Path, **settings: object) -> Archive:
    """An archive on a copy of the migrated SQLite template, for one test module or test."""
    var.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(sqlite_template, var / "archive.sqlite")
    return _open(var, **settings)


@dataclass(frozen=True)
class SiteTemplate:
    """A site built once (its var folder, closed) for tests that each want a fresh copy."""

    var: Path
    site: Site


def site_template(var: Path, sqlite_template: Path) -> SiteTemplate:
    archive = site_archive(var, sqlite_template)
    site = build_site(archive)
    archive.close()
    return SiteTemplate(var, site)


def marker_set(site: Site, author: str) -> int:
    """A new marker set of study P01 by ``author``: a route that changes or deletes one gets its own."""
    with site.archive.unit_of_work() as (session, _journal):
        study = session.get_one(Study, site.studies["P01"])
        return markers.create(session, study, f"set {secrets.token_hex(4)}", [markers.Point(1.0, 2.0, 3.0)], author).id


def copy_site(template: SiteTemplate, var: Path, **settings: object) -> Site:
    """A test's own copy of the template site (same ids), opened with ``settings``."""
    shutil.copytree(template.var, var, symlinks=True)
    return replace(template.site, archive=_open(var, **settings))


def build_site(archive: Archive) -> Site:
    """Projects ``alpha`` (three subjects) and ``beta`` (one); users named after their role on alpha."""
    write_secrets(archive.settings)
    site = Site(archive)
    with archive.unit_of_work() as (session, journal):
        alpha = create_project(session, journal, archive.layout, "alpha", "the test project")
        beta = create_project(session, journal, archive.layout, "beta")
        for name in (*ROLES, "norole", "siteadmin", "target"):
            user, _one_time = accounts.create_user(session, name, site_admin=name == "siteadmin")
            accounts.set_password(user, PASSWORD)
            site.users[name] = user.id
            site.tokens[name] = accounts.create_token(session, user, "matrix").token.id
            if name in ROLES:
                accounts.grant_role(session, user, alpha, Role(name))
        for subject, study_id, when, description, name in SUBJECTS:
            study = ensure_study(session, alpha, subject, study_id)
            study.study_date, study.description = when, description
            session.add(SubjectIdentity(subject_id=study.subject_id, patient_name=name, real_patient_id=subject))
            paths = [
                _nifti(archive, "alpha", subject, study_id, AXIAL, "001_ax"),
                _nifti(archive, "alpha", subject, study_id, SAGITTAL, "002_sag"),
            ]
            files = add_files(session, archive.layout, alpha, paths)
            site.studies[subject] = study.id
            site.files[subject] = files[0].id
            site.files[f"{subject}/sag"] = files[1].id
        add_tags(session, TagLevel.STUDY, [site.studies["P01"]], ["control"])
        other = ensure_study(session, beta, "Q01", "S1")
        site.other_study = other.id
        site.other_file = add_files(session, archive.layout, beta, [_nifti(archive, "beta", "Q01", "S1", AXIAL, "001_ax")])[0].id
        p01 = session.get_one(Study, site.studies["P01"])
        run = JobRun(project_id=alpha.id, subject_id=p01.subject_id, study_id=p01.id, state=JobState.DONE, message="ok")
        session.add(run)
        session.add(SavedBatch(project_id=alpha.id, name="stats", spec=json.dumps({
            "name": "stats", "level": "study",
            "jobs": [{"job": "stats", "args": {
                "f1": {"type": "FILE", "value": "001_ax/*.nii"}, "o1": {"type": "OUT", "value": "stats.json"},
            }}],
        })))
        session.add(ViewerPreset(project_id=alpha.id, name="two views", spec=json.dumps({
            "layout": "1x2", "viewports": [{"file": "001_ax/*.nii", "window": [0, 2000]}, {"file": "002_sag/*.nii"}],
        })))
        session.flush()
        site.run = run.id
        peer = PacsPeer(name="hospital", aet="HOSPITAL", host="127.0.0.1", port=104, retrieve=RetrieveMethod.MOVE)
        session.add(peer)
        session.flush()
        pull = PullCohort(project_id=alpha.id, peer_id=peer.id, source="cohort.csv", created_by="editor")
        session.add(pull)
        session.flush()
        site.pull = pull.id
        site.link = "link-alpha-1"
        session.add(SharedLink(key=site.link, project_id=alpha.id, created_by=site.users["viewer"], state=json.dumps({
            "layout": "1x1", "crosshair": None,
            "viewports": [[{"file_id": site.files["P01"], "colormap": "gray", "opacity": 1.0, "window": None}]],
        })))
    site.reading = _reading(archive)
    # As `nora --admin init` leaves it: the tree belongs to the jobs group, so sandboxed jobs read it.
    secure_archive_root(archive.settings)
    return site


SITE_FORM = {"items": [{"kind": "radio", "name": "finding", "options": ["none", "benign", "malignant"], "required": True}]}


def _reading(archive: Archive) -> int:
    """A started reading of alpha's three studies, read by every member of alpha who may read."""
    with archive.unit_of_work() as (session, _journal):
        alpha = get_project(session, "alpha")
        service.save_form(session, alpha, "site-form", SITE_FORM, "admin")
        config = parse_config({
            "name": "site reading", "form": "site-form", "cases": {"patient_id": "P0*"},
            "readers": ["reader", "editor", "admin", "siteadmin"],
        })
        reading = service.save_reading(session, alpha, config, "admin", None)
        service.start_reading(session, alpha, reading)
        return reading.id
