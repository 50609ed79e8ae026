"""LDAP log-in: bind as the user over TLS, then read the entry and its groups as that user.

The user name is checked against the archive's user-name syntax and escaped anyway before it
goes into a DN or a filter, so ``*``, ``)`` or ``,`` typed in the log-in form never widen a
search or name another entry. An empty password is refused before the directory is asked:
LDAP treats a bind with a name and no password as anonymous, which succeeds.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
from dataclasses import dataclass

from ldap3 import BASE, SUBTREE, Connection, Server, Tls
from ldap3.core.exceptions import LDAPException
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import escape_rdn

from nifti_archive import accounts
from nifti_archive.errors import ServiceUnavailable
from nifti_archive.identity.config import LdapDirectory, LdapSecurity
from nifti_archive.identity.linking import ExternalIdentity
from nifti_archive.models import AccountOrigin

log = logging.getLogger(__name__)
MEMBER_ATTRIBUTES = ("member", "uniqueMember")


class DirectoryUnavailable(ServiceUnavailable):
    """The directory cannot be reached, or TLS to it fails (the portal answers 503)."""


@dataclass(frozen=True)
class _Entry:
    dn: str
    username: str


def user_dn(directory: LdapDirectory, username: str) -> str:
    return directory.user_dn.replace("{username}", escape_rdn(username))


def group_filter(dn: str) -> str:
    escaped = escape_filter_chars(dn)
    return "(|" + "".join(f"({attribute}={escaped})" for attribute in MEMBER_ATTRIBUTES) + ")"


def _naming_attribute(directory: LdapDirectory) -> str:
    # "uid={username},ou=people,..." names users by uid: the entry's own value is the canonical name.
    return directory.user_dn.split("{username}")[0].rstrip("=").split(",")[-1].strip()


def _server(directory: LdapDirectory) -> Server:
    tls = Tls(
        validate=ssl.CERT_REQUIRED, version=ssl.PROTOCOL_TLS_CLIENT,
        ca_certs_file=str(directory.ca_file) if directory.ca_file else None,
    )
    return Server(directory.url, use_ssl=directory.security is LdapSecurity.LDAPS, tls=tls,
                  connect_timeout=directory.timeout_seconds)


def _entry(connection: Connection, directory: LdapDirectory, dn: str, typed: str) -> _Entry:
    attribute = _naming_attribute(directory)
    connection.search(dn, "(objectClass=*)", search_scope=BASE, attributes=[attribute])
    if not connection.entries:
        return _Entry(dn, typed)
    entry = connection.entries[0]
    values = entry[attribute].values if attribute in entry else []
    return _Entry(str(entry.entry_dn), str(values[0]) if values else typed)


def _groups(connection: Connection, directory: LdapDirectory, dn: str) -> frozenset[str]:
    """The groups naming the user as a member, by name (cn) and by DN, for the role mapping."""
    if directory.group_base is None:
        return frozenset()
    connection.search(directory.group_base, group_filter(dn), search_scope=SUBTREE, attributes=["cn"])
    names = set()
    for entry in connection.entries:
        names.add(str(entry.entry_dn))
        names.update(str(value) for value in (entry["cn"].values if "cn" in entry else []))
    return frozenset(names)


def authenticate(directory: LdapDirectory, username: str, password: str) -> ExternalIdentity | None:
    """Who the directory says this is when the password binds; None for a wrong name or password."""
    if not password or not accounts.USERNAME.fullmatch(username):
        return None
    dn = user_dn(directory, username)
    connection = Connection(_server(directory), user=dn, password=password, receive_timeout=directory.timeout_seconds,
                            raise_exceptions=False)
    try:
        connection.open()
        if directory.security is LdapSecurity.STARTTLS and not connection.start_tls():
            raise DirectoryUnavailable(f"the directory {directory.label} refused StartTLS")
        if not connection.bind():
            return None
        entry = _entry(connection, directory, dn, username)
        groups = _groups(connection, directory, entry.dn)
    except LDAPException as exc:
        log.warning("LDAP directory %s (%s) failed: %s", directory.name, directory.url, exc)
        raise DirectoryUnavailable(f"the directory {directory.label} cannot be reached just now; try again later") from None
    finally:
        # A connection whose TLS failed has no socket left to say goodbye on.
        with contextlib.suppress(LDAPException, OSError):
            connection.unbind()
    return ExternalIdentity(AccountOrigin.LDAP, directory.name, entry.dn, entry.username, groups)
