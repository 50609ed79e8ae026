"""Institutional identities to accounts: find the linked one, create or link it, map roles.

The provider vouches for who someone is; what they may do here stays this archive's decision
where no role mapping is set, and a disabled account stays shut whatever the provider says.

An account is linked to what never changes for its person: OIDC's issuer and subject (a subject
is unique only at its issuer), an LDAP directory's name and DN. User names are claims people may
change at their provider: one is matched only once, at the first log-in, against an account a
site admin made for it (``accounts = "link"``) or to name the account made.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from nifti_archive import accounts
from nifti_archive.errors import Forbidden, InvalidValue
from nifti_archive.identity.config import AccountPolicy, RoleMapping
from nifti_archive.models import AccountOrigin, Project, ProjectRole, Role, User

log = logging.getLogger(__name__)
# Argon2 cannot parse this, so no password ever verifies against an institutional account.
NO_LOCAL_PASSWORD = "!institutional:"
ROLE_ORDER = list(Role)


class LoginRefused(Forbidden):
    """The provider said who the user is, and this archive still says no (the portal answers 403)."""


@dataclass(frozen=True)
class ExternalIdentity:
    origin: AccountOrigin
    provider: str
    # The provider's lasting name for the user: OIDC's subject, an LDAP DN.
    external_id: str
    username: str
    # OIDC claim values or LDAP group names, for the role mapping.
    role_values: frozenset[str] = frozenset()
    # OIDC: the issuer whose subject external_id is; None for LDAP, whose DNs the directory's name scopes.
    issuer: str | None = None

    @property
    def link(self) -> str:
        """What the account keeps as its external id: ``<issuer>#<subject>`` for OIDC (an issuer
        has no fragment, so the first ``#`` splits them), the DN for LDAP."""
        return self.external_id if self.issuer is None else f"{self.issuer}#{self.external_id}"


@dataclass(frozen=True)
class RolePlan:
    """Site administration (None: not managed by the mapping) and, per mapped project, the role or none."""

    site_admin: bool | None
    projects: dict[str, Role | None]


def plan_roles(mapping: RoleMapping, values: Iterable[str]) -> RolePlan:
    """What the mapping gives for these values: the highest role per mapped project; projects the
    mapping does not name, and site administration where it names none, are left to the site admins."""
    granted = [grant for value in set(values) for grant in mapping.grants.get(value, ())]
    projects: dict[str, Role | None] = dict.fromkeys(mapping.projects)
    for grant in granted:
        if grant.project and grant.role:
            held = projects[grant.project]
            projects[grant.project] = grant.role if held is None else max(held, grant.role, key=ROLE_ORDER.index)
    site_admin = any(grant.site_admin for grant in granted) if mapping.manages_site_admin else None
    return RolePlan(site_admin, projects)


def apply_roles(session: Session, user: User, plan: RolePlan) -> None:
    if plan.site_admin is not None:
        user.is_site_admin = plan.site_admin
    for name, role in plan.projects.items():
        project = session.scalar(select(Project).where(Project.name == name))
        if project is None:
            log.warning("the role mapping names project %r, which does not exist", name)
            continue
        if role is not None:
            accounts.grant_role(session, user, project, role)
        elif (held := session.get(ProjectRole, (user.id, project.id))) is not None:
            session.delete(held)
    session.flush()


def _linked(session: Session, identity: ExternalIdentity) -> User | None:
    if identity.issuer is None:
        return session.scalar(select(User).where(User.provider == identity.provider, User.external_id == identity.link))
    # Any entry for the issuer: two entries for one issuer (two clients) see the same people.
    user = session.scalar(select(User).where(User.origin == AccountOrigin.OIDC, User.external_id == identity.link))
    if user is None:
        # Linked before links named the issuer: by the bare subject under this entry's name.
        user = session.scalar(select(User).where(User.origin == AccountOrigin.OIDC, User.provider == identity.provider,
                                                 User.external_id == identity.external_id))
        if user is not None:
            user.external_id = identity.link
            log.info("account %s: link to %s now names its issuer", user.username, identity.provider)
    return user


def _first_log_in(session: Session, identity: ExternalIdentity, policy: AccountPolicy) -> User:
    named = session.scalar(select(User).where(User.username == identity.username))
    if policy is AccountPolicy.LINK:
        # Only an account made for this provider and not yet claimed: a local account of the same
        # name may belong to someone else than the provider's user of that name.
        if named is None or named.provider != identity.provider or named.external_id is not None:
            raise LoginRefused(f"there is no account for {identity.username!r} here yet; ask a site admin to create one")
        named.external_id = identity.link
        log.info("account %s linked to %s at %s", named.username, identity.link, identity.provider)
        return named
    if named is not None:
        raise LoginRefused(f"the user name {identity.username!r} belongs to another account here; ask a site admin")
    if not accounts.USERNAME.fullmatch(identity.username):
        raise LoginRefused(f"the provider's user name {identity.username!r} is not a valid user name here")
    user = User(
        username=identity.username, password_hash=NO_LOCAL_PASSWORD + secrets.token_hex(8), must_change_password=False,
        origin=identity.origin, provider=identity.provider, external_id=identity.link,
    )
    session.add(user)
    session.flush()
    log.info("account %s created for %s at %s", user.username, identity.link, identity.provider)
    return user


def sign_in(session: Session, identity: ExternalIdentity, policy: AccountPolicy, mapping: RoleMapping) -> User:
    """The account the identity logs in to, its roles updated by the mapping; LoginRefused if none may."""
    user = _linked(session, identity) or _first_log_in(session, identity, policy)
    if user.disabled:
        raise LoginRefused("this account is disabled")
    apply_roles(session, user, plan_roles(mapping, identity.role_values))
    return user


def precreate(session: Session, username: str, origin: AccountOrigin, provider: str) -> User:
    """An account waiting for its owner's first log-in at ``provider`` (for AccountPolicy.LINK)."""
    if origin is AccountOrigin.LOCAL:
        raise InvalidValue("a local account has no provider")
    user, _password = accounts.create_user(session, username)
    user.password_hash = NO_LOCAL_PASSWORD + secrets.token_hex(8)
    user.must_change_password = False
    user.origin, user.provider = origin, provider
    session.flush()
    return user


def origin_label(user: User) -> str:
    """Where an account comes from, as the command line lists it: local, oidc:<provider>, ldap:<directory>."""
    return user.origin.value if user.origin is AccountOrigin.LOCAL else f"{user.origin.value}:{user.provider}"


def describe(session: Session, user: User) -> list[tuple[str, str]]:
    """An account's particulars, as ``nora --admin user show`` prints them."""
    roles = ", ".join(f"{project} {role.value}" for name, project, role in accounts.list_roles(session) if name == user.username)
    return [
        ("user", user.username), ("origin", origin_label(user)),
        # An account made for a provider and not yet logged in to has no external id yet.
        ("external id", user.external_id or ("-" if user.origin is AccountOrigin.LOCAL else "(not linked yet)")),
        ("site admin", "yes" if user.is_site_admin else "no"), ("disabled", "yes" if user.disabled else "no"),
        ("created", user.created_at.isoformat(timespec="seconds")), ("roles", roles or "-"),
    ]
