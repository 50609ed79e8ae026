"""BIDS export of a project: its converted series read from the archive, planned and written."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from nifti_archive.archive import Archive, get_project
from nifti_archive.bids.dataset import Written, is_update, write_dataset
from nifti_archive.bids.plan import IMAGE_EXTENSIONS, MANIFEST, Plan, SeriesFile, plan_dataset
from nifti_archive.bids.rules import parse_rules
from nifti_archive.catalog.analyses import analysis_subjects
from nifti_archive.errors import InvalidValue
from nifti_archive.layout import ArchiveLayout
from nifti_archive.models import File, FileKind, Project, Study, Subject
from nifti_archive.query.filter_sql import Column
from nifti_archive.query.selection import study_selection

COMPANION_EXTENSIONS = (".bval", ".bvec")


@dataclass(frozen=True)
class Exported:
    plan: Plan
    written: Written


def _stem(path: str) -> str:
    return next(path[: -len(ext)] for ext in IMAGE_EXTENSIONS if path.endswith(ext))


def collect(session: Session, layout: ArchiveLayout, project: Project, expression: str = "") -> list[SeriesFile]:
    """The project's converted NIfTI files, of the studies the file-search filter selects ('' all); none of its analyses."""
    studies = study_selection(project.id, {Column.FILES: expression} if expression else {})
    rows = session.execute(
        select(Subject.patient_id, Study.study_id, File.path, File.kind, File.converter)
        .join(Study, Study.id == File.study_id)
        .join(Subject, Subject.id == Study.subject_id)
        .where(File.trash_id.is_(None), Study.id.in_(studies.with_only_columns(Study.id).order_by(None)),
               # An analysis is the project's, not a participant's.
               ~analysis_subjects())
    ).all()
    paths: dict[tuple[str, str], set[str]] = defaultdict(set)
    for subject, study, path, _kind, _converter in rows:
        paths[(subject, study)].add(path)
    found = []
    for subject, study, path, kind, converter in rows:
        # Only what a conversion made is a series; job outputs and files added by hand are not.
        if kind is not FileKind.NIFTI or converter is None or not path.endswith(IMAGE_EXTENSIONS):
            continue
        folder = layout.study_dir(project.name, subject, study)
        stem = _stem(path)
        sidecar_path = folder / f"{stem}.json"
        sidecar = json.loads(sidecar_path.read_text()) if f"{stem}.json" in paths[(subject, study)] else {}
        companions = {ext: folder / f"{stem}{ext}" for ext in COMPANION_EXTENSIONS if f"{stem}{ext}" in paths[(subject, study)]}
        found.append(SeriesFile(subject, study, path, folder / path, sidecar, companions))
    return found


def plan_project(session: Session, layout: ArchiveLayout, project: Project, expression: str = "") -> Plan:
    return plan_dataset(project.name, collect(session, layout, project, expression), parse_rules(project.bids_rules),
                        project.pseudonymise)


def check_names_kept(out: Path, plan: Plan) -> None:
    """An export added to must keep every name it gave: a series that would now get another
    one (a later series of its session needs runs) is refused, with both names."""
    manifest = out / MANIFEST
    if not is_update(out) or not manifest.is_file():
        return
    before = dict(line.split("\t", 1) for line in manifest.read_text().splitlines()[1:] if "\t" in line)
    now_named = {source: image for image, source in plan.images.items()}
    for image, source in sorted(before.items()):
        if plan.images.get(image, source) != source:
            raise InvalidValue(f"{out / image} holds {source}, and would now hold {plan.images[image]}: export into a new folder")
        if source in now_named and now_named[source] != image:
            raise InvalidValue(f"{source} was exported as {image} and would now be {now_named[source]} "
                               "(a series added to its session later needs run- entities): export into a new folder")


def export_project(archive: Archive, project_name: str, out: Path, expression: str = "", link: bool = False) -> Exported:
    out = Path(out).absolute()
    root = archive.settings.archive_root.resolve()
    resolved = out.resolve()
    if resolved == root or root in resolved.parents:
        raise InvalidValue(f"{out} is inside the archive ({root}): export to a folder outside it")
    with archive.sessions() as session:
        plan = plan_project(session, archive.layout, get_project(session, project_name), expression)
    check_names_kept(out, plan)
    return Exported(plan, write_dataset(plan.entries, out, link, plan.report_lines()))
