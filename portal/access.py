"""Who may call what: the access rule every route declares, and the decision, as plain functions.

A route is public, for any logged-in user, for site admins, or for a minimum role on one
project. Outside the project's members a project route answers 404, as if the project (or the
file, study or run named by id) did not exist: a stranger learns nothing from probing ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from nifti_archive.models import Project, Role


class Scope(Enum):
    PUBLIC = "public"
    USER = "user"
    SITE_ADMIN = "site admin"
    PROJECT = "project"


class Outcome(Enum):
    ALLOW = 200
    UNAUTHENTICATED = 401
    FORBIDDEN = 403
    HIDDEN = 404


@dataclass(frozen=True)
class Rule:
    scope: Scope
    role: Role | None = None

    def describe(self) -> str:
        return f"{self.role.value} on the project" if self.role else self.scope.value


@dataclass(frozen=True)
class Caller:
    authenticated: bool
    site_admin: bool = False
    project_role: Role | None = None


ANONYMOUS = Caller(False)


def decide(rule: Rule, caller: Caller) -> Outcome:
    if rule.scope is Scope.PUBLIC:
        return Outcome.ALLOW
    if not caller.authenticated:
        return Outcome.UNAUTHENTICATED
    if rule.scope is Scope.USER:
        return Outcome.ALLOW
    if rule.scope is Scope.SITE_ADMIN:
        return Outcome.ALLOW if caller.site_admin else Outcome.FORBIDDEN
    assert rule.role is not None, "a project rule names its role"
    if caller.project_role is None:
        return Outcome.HIDDEN
    return Outcome.ALLOW if caller.project_role.allows(rule.role) else Outcome.FORBIDDEN


# The most a project-scoped token (a job run's) may do on its project.
SCOPED_TOKEN_CEILING = Role.EDITOR


@dataclass(frozen=True)
class TokenScope:
    """A token limited to one project: the REST API of that project, as at most an editor.

    ``for_service``: the token acts as the jobs' service account (a run nobody here launched),
    which holds no role of its own and gets the ceiling on the token's project.
    """

    project_id: int
    for_service: bool = False


def scoped_role(scope: TokenScope, project_id: int, held: Role | None) -> Role | None:
    """The role a scoped token acts with on a project: none outside its own; on its own, the
    user's role capped at editor (a user who lost the role meanwhile has none), or the ceiling
    for the jobs' service account."""
    if project_id != scope.project_id:
        return None
    if held is None:
        return SCOPED_TOKEN_CEILING if scope.for_service else None
    return SCOPED_TOKEN_CEILING if held.allows(SCOPED_TOKEN_CEILING) else held


def decide_scoped(rule: Rule, caller: Caller, api_route: bool) -> Outcome:
    """``decide`` for a caller holding a scoped token (``caller.project_role`` already scoped):
    no pages (account pages mint tokens and change passwords) and nothing for site admins."""
    if rule.scope is Scope.PUBLIC:
        return Outcome.ALLOW
    if not api_route or rule.scope is Scope.SITE_ADMIN:
        return Outcome.FORBIDDEN
    return decide(rule, Caller(caller.authenticated, site_admin=False, project_role=caller.project_role))


def may_see_identity(project: Project, role: Role | None) -> bool:
    """Real names: in a pseudonymised project only its admins see them; elsewhere every member."""
    if role is None:
        return False
    return role is Role.ADMIN or not project.pseudonymise
