"""Users, roles and tokens in the database: hashes only, expiry and revocation honoured."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from nifti_archive import accounts
from nifti_archive.archive import Archive
from nifti_archive.errors import InvalidValue
from nifti_archive.models import Project, Role


def test_passwords_are_argon2_hashes(archive: Archive) -> None:
    with archive.unit_of_work() as (session, _):
        user, password = accounts.create_user(session, "alice")
        assert user.password_hash.startswith("$argon2id$") and password not in user.password_hash
        assert accounts.verify_password(user, password)
        assert not accounts.verify_password(user, password + "x")
        assert user.must_change_password
        with pytest.raises(InvalidValue, match="at least 10"):
            accounts.set_password(user, "short")
        accounts.set_password(user, "a much longer secret")
        assert accounts.verify_password(user, "a much longer secret") and not user.must_change_password


def test_roles_order_and_site_admins(archive: Archive) -> None:
    assert Role.ADMIN.allows(Role.EDITOR) and Role.READER.allows(Role.VIEWER) and not Role.VIEWER.allows(Role.READER)
    with archive.unit_of_work() as (session, _):
        project = Project(name="p")
        session.add(project)
        user, _pw = accounts.create_user(session, "bob")
        root, _pw = accounts.create_user(session, "root", site_admin=True)
        assert accounts.role_on(session, user, project) is None
        accounts.grant_role(session, user, project, Role.READER)
        assert accounts.role_on(session, user, project) is Role.READER
        accounts.grant_role(session, user, project, Role.EDITOR)
        assert accounts.role_on(session, user, project) is Role.EDITOR
        assert accounts.role_on(session, root, project) is Role.ADMIN
        user.disabled = True
        assert accounts.role_on(session, user, project) is None


def test_tokens_authenticate_until_revoked_or_expired(archive: Archive) -> None:
    with archive.unit_of_work() as (session, _):
        user, _pw = accounts.create_user(session, "carol")
        issued = accounts.create_token(session, user, "scripts")
        assert issued.token.token_hash != issued.secret and issued.secret not in issued.token.token_hash
        assert accounts.user_for_token(session, issued.secret) is user
        assert accounts.user_for_token(session, issued.secret + "x") is None
        accounts.revoke_token(session, issued.token.id)
        assert accounts.user_for_token(session, issued.secret) is None
        short = accounts.create_token(session, user, "short", expires_in_days=1)
        assert accounts.user_for_token(session, short.secret) is user
        short.token.expires_at = datetime.now(UTC) - timedelta(seconds=1)
        session.flush()
    with archive.sessions() as session:
        assert accounts.user_for_token(session, short.secret) is None
