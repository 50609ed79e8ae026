"""Projects: creation and listing."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from nifti_archive.archive import FileJournal
from nifti_archive.bids import rules
from nifti_archive.errors import Conflict, InvalidValue, NotFound
from nifti_archive.ingest import naming
from nifti_archive.ingest.routing import Rule
from nifti_archive.layout import ArchiveLayout, check_project_name
from nifti_archive.models import Project, Role, RoutingRule


def create_project(
    session: Session, journal: FileJournal, layout: ArchiveLayout, name: str, description: str = ""
) -> Project:
    check_project_name(name)
    if session.scalar(select(Project.id).where(Project.name == name)) is not None:
        raise Conflict(f"project {name!r} already exists")
    journal.make_dir(layout.project_dir(name))
    project = Project(name=name, description=description)
    session.add(project)
    session.flush()
    return project


def list_projects(session: Session) -> list[Project]:
    return list(session.scalars(select(Project).order_by(Project.name)))


def update_settings(
    project: Project,
    description: str | None = None,
    pseudonymise: bool | None = None,
    subject_template: str | None = None,
    study_template: str | None = None,
    series_template: str | None = None,
    autoexec_batch: str | None = None,
    default_queue: str | None = None,
    generic_jobs_role: Role | None = None,
    job_network_allowed: bool | None = None,
    bids_rules: str | None = None,
) -> None:
    """Change what is given; templates are checked against the (new) pseudonymisation setting.

    A study template left at its default follows the setting: a pseudonymised project's default
    names studies without their accession number."""
    if pseudonymise is not None:
        project.pseudonymise = pseudonymise
        if study_template is None:
            project.study_template = default_study_template(project.study_template, pseudonymise)
    if description is not None:
        project.description = description
    # An empty value switches autoexecution off, or lets runs go to the cluster's default queue.
    if autoexec_batch is not None:
        project.autoexec_batch = autoexec_batch or None
    if default_queue is not None:
        project.default_queue = default_queue or None
    if generic_jobs_role is not None:
        if not generic_jobs_role.allows(Role.EDITOR):
            raise InvalidValue("generic bash/python jobs need at least the editor role (editor or admin)")
        project.generic_jobs_role = generic_jobs_role
    if job_network_allowed is not None:
        project.job_network_allowed = job_network_allowed
    # Empty text goes back to the built-in rules.
    if bids_rules is not None:
        project.bids_rules = rules.normalised(bids_rules) or None
    for field, value in (
        ("subject_template", subject_template),
        ("study_template", study_template),
        ("series_template", series_template),
    ):
        if value is not None:
            setattr(project, field, value)
    naming.check_template(project.subject_template, project.pseudonymise, replaced=naming.PSEUDONYM_REPLACES)
    for field in ("study_template", "series_template"):
        naming.check_template(getattr(project, field), project.pseudonymise)


def default_study_template(current: str, pseudonymised: bool) -> str:
    """``current``, or the other setting's default where ``current`` is one setting's default."""
    defaults = (naming.PLAIN_STUDY_TEMPLATE, naming.PSEUDONYMISED_STUDY_TEMPLATE)
    if current not in defaults:
        return current
    return naming.PSEUDONYMISED_STUDY_TEMPLATE if pseudonymised else naming.PLAIN_STUDY_TEMPLATE


def settings_of(project: Project) -> dict[str, object]:
    return {
        "name": project.name,
        "description": project.description,
        "pseudonymise": "yes" if project.pseudonymise else "no",
        "subject_template": project.subject_template,
        "study_template": project.study_template,
        "series_template": project.series_template,
        "autoexec_batch": project.autoexec_batch or "",
        "default_queue": project.default_queue or "",
        "generic_jobs_role": project.generic_jobs_role.value,
        "job_network": "yes" if project.job_network_allowed else "no",
        "bids_rules": project.bids_rules or "",
    }


def add_route(
    session: Session, project: Project, aet: str | None, tag: str | None, pattern: str | None, position: int
) -> RoutingRule:
    Rule(project.name, aet, tag, pattern)  # validates
    rule = RoutingRule(project_id=project.id, called_aet=aet, tag=tag, pattern=pattern, position=position)
    session.add(rule)
    session.flush()
    return rule


def remove_route(session: Session, rule_id: int) -> None:
    rule = session.get(RoutingRule, rule_id)
    if rule is None:
        raise NotFound(f"no routing rule {rule_id}")
    session.delete(rule)


def list_routes(session: Session) -> list[tuple[RoutingRule, str]]:
    rows = session.execute(
        select(RoutingRule, Project.name).join(Project, Project.id == RoutingRule.project_id).order_by(RoutingRule.position, RoutingRule.id)
    )
    return [(rule, name) for rule, name in rows]
