"""API tokens carry their kind: an XNAT alias is recognised by it, never by how a token is named,
and the tokens of an archive made before kinds existed are sorted by what told them apart then."""

from __future__ import annotations

import uuid
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, text

from nifti_archive import accounts, db
from nifti_archive.archive import Archive
from nifti_archive.models import TokenKind
from portal.xnat.credentials import ALIAS_NAME, issue_alias, prove


def test_an_alias_logs_in_by_its_kind_and_a_token_named_like_one_does_not(archive: Archive) -> None:
    with archive.unit_of_work() as (session, _journal):
        user, _password = accounts.create_user(session, "ann")
        alias, issued = issue_alias(session, user)
        impostor = str(uuid.uuid4())
        named_so = accounts.create_token(session, user, ALIAS_NAME + impostor, 2)
        assert (issued.token.kind, named_so.token.kind) == (TokenKind.ALIAS, TokenKind.PERSONAL)
        proven = prove(session, alias, issued.secret, "127.0.0.1")
        assert proven is not None and proven.user_id == user.id
        assert prove(session, impostor, named_so.secret, "127.0.0.1") is None
        assert prove(session, "ann", named_so.secret, "127.0.0.1") is not None


def test_the_migration_sorts_existing_tokens_by_their_naming(tmp_path: Path) -> None:
    # A plain engine: SQLite then leaves foreign keys unchecked, so a run token needs no run row.
    engine = create_engine(f"sqlite:///{tmp_path / 'old.sqlite'}")
    config = Config()
    config.set_main_option("script_location", str(db.MIGRATIONS_DIR))
    config.attributes["engine"] = engine
    command.upgrade(config, "0017")
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO users (id, username, password_hash, is_site_admin, must_change_password, disabled, "
                                "created_at) VALUES (1, 'ann', 'x', 0, 0, 0, '2026-01-01')"))
        for key, name, project, run in ((1, "laptop", None, None), (2, f"{ALIAS_NAME}{uuid.uuid4()}", None, None),
                                        (3, "run 4", 9, 4), (4, "run 5", 9, None)):
            connection.execute(text("INSERT INTO api_tokens (id, user_id, name, prefix, token_hash, created_at, project_id, "
                                    "job_run_id) VALUES (:key, 1, :name, 'nrt_', :hash, '2026-01-01', :project, :run)"),
                               {"key": key, "name": name, "hash": f"h{key}", "project": project, "run": run})
    command.upgrade(config, "head")
    with engine.connect() as connection:
        kinds = dict(connection.execute(text("SELECT id, kind FROM api_tokens")).all())
    engine.dispose()
    assert kinds == {1: "personal", 2: "alias", 3: "job", 4: "job"}
