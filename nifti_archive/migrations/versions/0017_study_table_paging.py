"""study table paging

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-02 22:40:00

The studies table's cached counts and page boundaries are valid for one version of a project's
table: triggers raise ``projects.table_version`` with every change that can move a study into or
out of a filter or change its place in an order, whatever code path makes it. Indexes on the live
studies' descriptions and dates let a table sorted by them be read in index order.
"""

from alembic import op
import sqlalchemy as sa


revision = '0017'
down_revision = '0016'
branch_labels = None
depends_on = None

_BY_PROJECT = "SELECT id FROM projects WHERE id {}"
_BY_SUBJECT = "SELECT project_id FROM subjects WHERE id {}"
_BY_STUDY = "SELECT sj.project_id FROM studies st JOIN subjects sj ON sj.id = st.subject_id WHERE st.id {}"
_BY_FILE = (
    "SELECT sj.project_id FROM files f JOIN studies st ON st.id = f.study_id JOIN subjects sj ON sj.id = st.subject_id "
    "WHERE f.id {}"
)
# Per table: the column that leads to the project, how, and the columns whose update matters
# (None: any; job runs change their timestamps and messages far more often than their state).
_WATCHED = {
    "subjects": ("project_id", _BY_PROJECT, "project_id, patient_id, trash_id"),
    "subject_identities": ("subject_id", _BY_SUBJECT, None),
    "subject_tags": ("subject_id", _BY_SUBJECT, None),
    "studies": ("subject_id", _BY_SUBJECT, "subject_id, study_id, study_date, description, trash_id"),
    "study_tags": ("study_id", _BY_STUDY, None),
    "files": ("study_id", _BY_STUDY, "study_id, path, trash_id"),
    "file_tags": ("file_id", _BY_FILE, None),
    "job_runs": ("project_id", _BY_PROJECT, "project_id, subject_id, study_id, state, dismissed"),
}
_BUMP = "UPDATE projects SET table_version = table_version + 1 WHERE id IN ({})"


def upgrade() -> None:
    with op.batch_alter_table('projects', schema=None) as batch_op:
        batch_op.add_column(sa.Column('table_version', sa.Integer(), server_default='0', nullable=False))
    with op.batch_alter_table('studies', schema=None) as batch_op:
        batch_op.create_index('ix_studies_live_description', ['description'], unique=False, sqlite_where=sa.text('trash_id IS NULL'), postgresql_where=sa.text('trash_id IS NULL'))
        batch_op.create_index('ix_studies_live_study_date', ['study_date'], unique=False, sqlite_where=sa.text('trash_id IS NULL'), postgresql_where=sa.text('trash_id IS NULL'))
    if op.get_bind().dialect.name == "postgresql":
        _postgresql_triggers()
    else:
        _sqlite_triggers()


def _sqlite_triggers() -> None:
    for table, (column, lookup, updated) in _WATCHED.items():
        new, old = lookup.format(f"= NEW.{column}"), lookup.format(f"= OLD.{column}")
        events = {"insert": ("INSERT", new), "delete": ("DELETE", old),
                  "update": (f"UPDATE OF {updated}" if updated else "UPDATE", f"{new} UNION {old}")}
        for name, (event, projects) in events.items():
            op.execute(f"CREATE TRIGGER tv_{table}_{name} AFTER {event} ON {table} BEGIN {_BUMP.format(projects)}; END")


def _postgresql_triggers() -> None:
    # Once per transaction and project: every update of a row leaves PostgreSQL a new version of
    # it, and a transaction inserting a hundred thousand files would otherwise walk a chain of as
    # many versions at each one. The row's xmin is this transaction's id once it has raised it.
    bump = _BUMP + " AND xmin::text::bigint <> mod(txid_current(), 4294967296)"
    for table, (column, lookup, updated) in _WATCHED.items():
        op.execute(
            f"CREATE FUNCTION tv_{table}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            f"IF TG_OP <> 'INSERT' THEN {bump.format(lookup.format(f'= OLD.{column}'))}; END IF; "
            f"IF TG_OP <> 'DELETE' THEN {bump.format(lookup.format(f'= NEW.{column}'))}; END IF; "
            "RETURN NULL; END $$"
        )
        event = f"UPDATE OF {updated}" if updated else "UPDATE"
        op.execute(
            f"CREATE TRIGGER tv_{table} AFTER INSERT OR {event} OR DELETE ON {table} FOR EACH ROW EXECUTE FUNCTION tv_{table}()"
        )


def downgrade() -> None:
    for table in _WATCHED:
        if op.get_bind().dialect.name == "postgresql":
            op.execute(f"DROP TRIGGER tv_{table} ON {table}")
            op.execute(f"DROP FUNCTION tv_{table}()")
        else:
            for name in ("insert", "update", "delete"):
                op.execute(f"DROP TRIGGER tv_{table}_{name}")
    with op.batch_alter_table('studies', schema=None) as batch_op:
        batch_op.drop_index('ix_studies_live_study_date', sqlite_where=sa.text('trash_id IS NULL'), postgresql_where=sa.text('trash_id IS NULL'))
        batch_op.drop_index('ix_studies_live_description', sqlite_where=sa.text('trash_id IS NULL'), postgresql_where=sa.text('trash_id IS NULL'))
    with op.batch_alter_table('projects', schema=None) as batch_op:
        batch_op.drop_column('table_version')
