"""Provider settings: ``[northanc.oidc.<name>]`` and ``[northanc.ldap.<name>]`` tables.

Parsed into frozen dataclasses once, when the settings load, so a misspelt key or a plain-text
LDAP URL stops the site at start-up with a message naming the table and the key, rather than
at the first log-in.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from nifti_archive.errors import ConfigError
from nifti_archive.models import AccountOrigin, Role

# A provider's name appears in URLs, in User.provider (64 characters) and in log lines.
PROVIDER_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
SECRET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
SITE_ADMIN_GRANT = "site-admin"
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
T = TypeVar("T")
E = TypeVar("E", bound=Enum)


class AccountPolicy(Enum):
    """What a first log-in does when no account is linked to the provider's identity yet."""

    CREATE = "create"  # a new account, named by the provider's user name
    LINK = "link"  # only an account a site admin created for this provider beforehand


class LdapSecurity(Enum):
    LDAPS = "ldaps"  # TLS from the first byte (ldaps://)
    STARTTLS = "starttls"  # ldap:// upgraded before the bind


@dataclass(frozen=True)
class RoleGrant:
    """What one claim value or group gives: site administration, or a role on a project."""

    site_admin: bool = False
    project: str | None = None
    role: Role | None = None


@dataclass(frozen=True)
class RoleMapping:
    """Claim values (OIDC) or group names (LDAP) to grants; empty: roles are managed here only."""

    grants: Mapping[str, tuple[RoleGrant, ...]] = field(default_factory=dict)

    @property
    def manages_site_admin(self) -> bool:
        return any(grant.site_admin for grants in self.grants.values() for grant in grants)

    @property
    def projects(self) -> frozenset[str]:
        return frozenset(grant.project for grants in self.grants.values() for grant in grants if grant.project)


@dataclass(frozen=True)
class OidcProvider:
    name: str
    label: str
    issuer: str
    client_id: str
    # A file name under <var>/secrets: the secret itself never sits in the settings file.
    client_secret_file: str
    scopes: tuple[str, ...]
    username_claim: str
    accounts: AccountPolicy
    roles_claim: str | None
    roles: RoleMapping


@dataclass(frozen=True)
class LdapDirectory:
    name: str
    label: str
    url: str
    security: LdapSecurity
    # PEM file of the CA that signed the directory's certificate; None: the system's CAs.
    ca_file: Path | None
    # Where a user's entry is: "{username}" is replaced by the escaped user name.
    user_dn: str
    # Groups are searched under this base for entries naming the user's DN as a member.
    group_base: str | None
    accounts: AccountPolicy
    roles: RoleMapping
    timeout_seconds: int


@dataclass(frozen=True)
class IdentityProviders:
    oidc: tuple[OidcProvider, ...] = ()
    ldap: tuple[LdapDirectory, ...] = ()

    def oidc_named(self, name: str) -> OidcProvider | None:
        return next((provider for provider in self.oidc if provider.name == name), None)

    def ldap_named(self, name: str) -> LdapDirectory | None:
        return next((directory for directory in self.ldap if directory.name == name), None)

    def origin_of(self, name: str) -> AccountOrigin:
        """Whether ``name`` is an OIDC provider or an LDAP directory here; ConfigError if neither."""
        if self.oidc_named(name):
            return AccountOrigin.OIDC
        if self.ldap_named(name):
            return AccountOrigin.LDAP
        known = sorted([provider.name for provider in self.oidc] + [directory.name for directory in self.ldap])
        raise ConfigError(f"no provider {name!r} in the settings; known: {', '.join(known) or 'none'}")


class _Table:
    """One provider's table, read key by key; every error names ``[northanc.<kind>.<name>] key``."""

    def __init__(self, kind: str, name: str, raw: object) -> None:
        self.where = f"[northanc.{kind}.{name}]"
        if not isinstance(raw, dict):
            raise ConfigError(f"{self.where} must be a table")
        self.raw: dict[str, object] = raw
        self.read: set[str] = set()

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.where} {key}: {message}")

    def get(self, key: str, kind: type[T], default: T | None = None) -> T:
        self.read.add(key)
        if key not in self.raw:
            if default is None:
                raise self.error(key, "missing")
            return default
        value = self.raw[key]
        if not isinstance(value, kind) or (isinstance(value, str) and not value.strip()):
            raise self.error(key, f"must be a non-empty {kind.__name__}, not {value!r}")
        return value

    def optional_text(self, key: str) -> str | None:
        self.read.add(key)
        return self.get(key, str) if key in self.raw else None

    def choice(self, key: str, enum: type[E], default: E) -> E:
        text = self.get(key, str, str(default.value))
        try:
            return enum(text)
        except ValueError:
            raise self.error(key, f"must be one of {', '.join(e.value for e in enum)}, not {text!r}") from None

    def finish(self) -> None:
        unknown = set(self.raw) - self.read
        if unknown:
            raise ConfigError(f"{self.where}: unknown key(s) {sorted(unknown)}; known keys are {sorted(self.read)}")


def parse_grant(text: str) -> RoleGrant:
    """``site-admin`` or ``<project>:<role>``."""
    if text == SITE_ADMIN_GRANT:
        return RoleGrant(site_admin=True)
    project, _, role = text.partition(":")
    if not project or role not in {r.value for r in Role}:
        roles = ", ".join(r.value for r in Role)
        raise ValueError(f"{text!r} is neither {SITE_ADMIN_GRANT!r} nor '<project>:<role>' with a role of {roles}")
    return RoleGrant(project=project, role=Role(role))


def _roles(table: _Table) -> RoleMapping:
    raw = table.get("roles", dict, {})
    grants: dict[str, tuple[RoleGrant, ...]] = {}
    for value, given in raw.items():
        texts = [given] if isinstance(given, str) else given
        if not isinstance(texts, list) or not all(isinstance(text, str) for text in texts):
            raise table.error("roles", f"{value!r} must map to a grant or a list of grants, not {given!r}")
        try:
            grants[str(value)] = tuple(parse_grant(text) for text in texts)
        except ValueError as exc:
            raise table.error("roles", f"{value!r}: {exc}") from None
    return RoleMapping(grants)


def _url(table: _Table, key: str, schemes: Iterable[str]) -> str:
    url = table.get(key, str)
    parts = urlsplit(url)
    if parts.scheme not in schemes or not parts.hostname:
        raise table.error(key, f"must be a {' or '.join(s + '://' for s in schemes)} URL with a host, not {url!r}")
    return url.rstrip("/")


def _oidc(name: str, table: _Table) -> OidcProvider:
    issuer = _url(table, "issuer", ("https", "http"))
    # Plain HTTP would hand the code and the tokens to anyone on the path; loopback is for tests.
    if urlsplit(issuer).scheme == "http" and urlsplit(issuer).hostname not in LOOPBACK_HOSTS:
        raise table.error("issuer", f"must be https:// (plain http only on the loopback interface), not {issuer!r}")
    secret_file = table.get("client_secret_file", str)
    if not SECRET_NAME.fullmatch(secret_file):
        raise table.error("client_secret_file", f"must be a file name in <var>/secrets, not a path: {secret_file!r}")
    scopes = table.get("scopes", list, ["openid", "profile", "email"])
    if not all(isinstance(scope, str) and scope for scope in scopes) or "openid" not in scopes:
        raise table.error("scopes", f"must be a list of scope names including 'openid', not {scopes!r}")
    roles_claim = table.optional_text("roles_claim")
    roles = _roles(table)
    if roles.grants and roles_claim is None:
        raise table.error("roles", "needs roles_claim: the claim whose values are mapped")
    return OidcProvider(
        name=name, label=table.get("label", str, name), issuer=issuer, client_id=table.get("client_id", str),
        client_secret_file=secret_file, scopes=tuple(scopes),
        username_claim=table.get("username_claim", str, "preferred_username"),
        accounts=table.choice("accounts", AccountPolicy, AccountPolicy.CREATE),
        roles_claim=roles_claim, roles=roles,
    )


def _ldap(name: str, table: _Table) -> LdapDirectory:
    url = _url(table, "url", ("ldaps", "ldap"))
    starttls = table.get("starttls", bool, False)
    if urlsplit(url).scheme == "ldap" and not starttls:
        raise table.error("url", "an ldap:// URL needs starttls = true: passwords are never sent in plain text")
    if urlsplit(url).scheme == "ldaps" and starttls:
        raise table.error("starttls", "ldaps:// is TLS already; starttls goes with ldap:// URLs")
    ca_text = table.optional_text("ca_file")
    ca_file = Path(ca_text).expanduser() if ca_text else None
    if ca_file is not None and not ca_file.is_file():
        raise table.error("ca_file", f"no such file: {ca_file}")
    user_dn = table.get("user_dn", str)
    if user_dn.count("{username}") != 1 or "=" not in user_dn.split("{username}")[0]:
        example = "uid={username},ou=people,dc=example,dc=org"
        raise table.error("user_dn", f"must hold one '{{username}}' as an attribute value, as in {example!r}, not {user_dn!r}")
    timeout = table.get("timeout_seconds", int, 5)
    if isinstance(timeout, bool) or timeout < 1:
        raise table.error("timeout_seconds", f"must be a whole number of seconds, at least 1, not {timeout!r}")
    roles = _roles(table)
    group_base = table.optional_text("group_base")
    if roles.grants and group_base is None:
        raise table.error("roles", "needs group_base: where the groups that are mapped are")
    return LdapDirectory(
        name=name, label=table.get("label", str, name), url=url,
        security=LdapSecurity.STARTTLS if starttls else LdapSecurity.LDAPS, ca_file=ca_file, user_dn=user_dn,
        group_base=group_base, accounts=table.choice("accounts", AccountPolicy, AccountPolicy.CREATE),
        roles=roles, timeout_seconds=timeout,
    )


def _providers(kind: str, raw: object, parse: Callable[[str, _Table], T]) -> tuple[T, ...]:
    if not isinstance(raw, dict):
        raise ConfigError(f"[northanc.{kind}] must hold one table per provider, as [northanc.{kind}.<name>]")
    parsed = []
    for name, body in raw.items():
        if not PROVIDER_NAME.fullmatch(name):
            raise ConfigError(f"[northanc.{kind}.{name}]: a provider's name is 1 to 32 lower-case letters, digits, '_' or '-'")
        table = _Table(kind, name, body)
        parsed.append(parse(name, table))
        table.finish()
    return tuple(parsed)


def parse_providers(oidc: object = None, ldap: object = None) -> IdentityProviders:
    """The ``oidc`` and ``ldap`` tables of ``[northanc]`` (either may be absent)."""
    providers = IdentityProviders(
        _providers("oidc", oidc or {}, _oidc), _providers("ldap", ldap or {}, _ldap)
    )
    names = [p.name for p in providers.oidc] + [d.name for d in providers.ldap]
    clash = sorted({n for n in names if names.count(n) > 1})
    if clash:
        raise ConfigError(f"provider name(s) {clash} used for both an OIDC provider and an LDAP directory: accounts are linked by name")
    return providers
