"""The Alembic migrations build exactly the schema the models describe, on both databases."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from nifti_archive import db
from nifti_archive.archive import Archive
from nifti_archive.models import Base

# Dialect-specific search indexes (trigram, text_pattern_ops) are made by the migration only.
SEARCH_INDEXES = {"ix_files_path_prefix", "ix_files_path_trgm", "ix_studies_description_trgm", "ix_subjects_patient_id_trgm"}


def test_schema_matches_models(archive: Archive) -> None:
    with archive.engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    unexpected = [d for d in diff if not (d[0] == "remove_index" and d[1].name in SEARCH_INDEXES)]
    assert unexpected == []
    expected_here = {"ix_files_path_prefix"} | (SEARCH_INDEXES if archive.engine.dialect.name == "postgresql" else set())
    assert {d[1].name for d in diff} == expected_here


def test_code_expects_the_newest_migration(archive: Archive) -> None:
    assert db.head_revision() == db.SCHEMA_REVISION == db.current_revision(archive.engine)


def test_upgrade_is_idempotent(archive: Archive) -> None:
    db.upgrade(archive.engine)
    db.require_current_schema(archive.engine)
